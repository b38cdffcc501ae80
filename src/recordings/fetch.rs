//! Downloading a recording Twilio reports (`RecordingUrl`): only from the
//! hosts `twilio.recording_hosts` lists, through the SSRF guard, with the
//! tenant's Twilio credentials, within a size cap and a deadline. A signed
//! callback proves the tenant's auth token signed it, not that the URL in it
//! is Twilio's, so the allow-list decides where our credentials may go.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use url::Url;

use super::{wav, Outcome};
use crate::net_guard::{Blocked, GuardPolicy, GuardedClient};

/// Redirects followed (each hop checked like the first); Twilio may answer
/// a media request with one to where the file is kept.
const MAX_REDIRECTS: usize = 3;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    /// Not a URL we download from: the tenant's configuration or a forged
    /// callback, not worth retrying.
    #[error("RecordingUrl is not allowed: {0}")]
    NotAllowed(String),
    #[error("the recording is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("the download is not a WAV file")]
    NotWav,
    /// Twilio or the network failed; a later attempt may succeed.
    #[error("downloading the recording failed: {0}")]
    Upstream(String),
}

impl FetchError {
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::NotAllowed(_) => Outcome::Refused,
            Self::TooLarge { .. } => Outcome::TooLarge,
            Self::NotWav => Outcome::NotWav,
            Self::Upstream(_) => Outcome::FetchFailed,
        }
    }
}

pub struct RecordingFetcher {
    client: GuardedClient,
    hosts: Vec<String>,
    max_bytes: usize,
    timeout: Duration,
}

impl RecordingFetcher {
    pub fn new(
        policy: GuardPolicy,
        hosts: &[String],
        max_bytes: usize,
        timeout: Duration,
    ) -> reqwest::Result<Self> {
        Ok(Self {
            client: GuardedClient::new(policy)?,
            hosts: hosts.iter().map(|host| normalize_host(host)).collect(),
            max_bytes,
            timeout,
        })
    }

    /// The WAV at `recording_url`, fetched as the account `account_sid`.
    pub async fn fetch(
        &self,
        recording_url: &str,
        account_sid: &str,
        auth_token: &str,
    ) -> Result<Vec<u8>, FetchError> {
        let url = self.media_url(recording_url)?;
        tokio::time::timeout(self.timeout, self.download(url, account_sid, auth_token))
            .await
            .map_err(|_| {
                FetchError::Upstream(format!("no answer within {} s", self.timeout.as_secs()))
            })?
    }

    /// The URL of the recording's WAV (Twilio serves a recording in the
    /// format its URL's extension names); refused unless its host is listed.
    pub fn media_url(&self, recording_url: &str) -> Result<Url, FetchError> {
        let mut url = Url::parse(recording_url)
            .map_err(|_| FetchError::NotAllowed("it is not an absolute URL".into()))?;
        self.check_host(&url)?;
        if !url.path().ends_with(".wav") {
            let path = format!("{}.wav", url.path().trim_end_matches('/'));
            url.set_path(&path);
        }
        Ok(url)
    }

    fn check_host(&self, url: &Url) -> Result<(), FetchError> {
        let host = url.host_str().map(normalize_host).unwrap_or_default();
        if self.hosts.contains(&host) {
            Ok(())
        } else {
            Err(FetchError::NotAllowed(format!(
                "the host {host:?} is not in twilio.recording_hosts"
            )))
        }
    }

    async fn download(
        &self,
        first: Url,
        account_sid: &str,
        auth_token: &str,
    ) -> Result<Vec<u8>, FetchError> {
        let mut url = first.clone();
        for _ in 0..=MAX_REDIRECTS {
            self.check_host(&url)?;
            let mut request = self
                .client
                .request(Method::GET, url.as_str())
                .map_err(|blocked| FetchError::NotAllowed(blocked.reason))?;
            // The credentials go only where they were meant to: a redirect
            // to another origin (a pre-signed file URL) needs none.
            if url.origin() == first.origin() {
                request = request.basic_auth(account_sid, Some(auth_token));
            }
            let response = request
                .send()
                .await
                .map_err(|error| match Blocked::behind(&error) {
                    Some(blocked) => FetchError::NotAllowed(blocked.reason.clone()),
                    None => FetchError::Upstream(error.to_string()),
                })?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .ok_or_else(|| {
                        FetchError::Upstream(format!("answered {status} without a Location"))
                    })?;
                url = url.join(location).map_err(|_| {
                    FetchError::Upstream(format!("answered {status} with a bad Location"))
                })?;
                continue;
            }
            if status != StatusCode::OK {
                return Err(FetchError::Upstream(format!("answered {status}")));
            }
            let bytes = self.read_capped(response).await?;
            if !wav::is_wav(&bytes) {
                return Err(FetchError::NotWav);
            }
            return Ok(bytes);
        }
        Err(FetchError::Upstream(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// The body, refused as soon as it is known to exceed the cap.
    async fn read_capped(&self, mut response: reqwest::Response) -> Result<Vec<u8>, FetchError> {
        let max = self.max_bytes;
        if response
            .content_length()
            .is_some_and(|length| length > max as u64)
        {
            return Err(FetchError::TooLarge { max });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| FetchError::Upstream(error.to_string()))?
        {
            if body.len() + chunk.len() > max {
                return Err(FetchError::TooLarge { max });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn normalize_host(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetcher(hosts: &[&str]) -> RecordingFetcher {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        RecordingFetcher::new(GuardPolicy::default(), &hosts, 1024, Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn a_recording_url_becomes_its_wav_on_a_listed_host_only() {
        let twilio = fetcher(&["API.twilio.com."]);
        let base = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1";
        assert_eq!(
            twilio.media_url(base).unwrap().as_str(),
            format!("{base}.wav")
        );
        assert_eq!(
            twilio.media_url(&format!("{base}.wav")).unwrap().as_str(),
            format!("{base}.wav")
        );
        assert!(twilio.media_url("https://API.Twilio.com./x").is_ok());
        for refused in [
            "https://api.twilio.com.evil.example/x",
            "https://evil.example/api.twilio.com",
            "https://169.254.169.254/latest/meta-data",
            "http://127.0.0.1:8080/x",
            "/relative/path",
            "not a url",
        ] {
            assert!(
                matches!(twilio.media_url(refused), Err(FetchError::NotAllowed(_))),
                "{refused}"
            );
        }
    }

    #[tokio::test]
    async fn a_recording_on_a_listed_host_still_passes_the_ssrf_guard() {
        // Listed, but loopback over http: the guard's default policy refuses both.
        let listed = fetcher(&["127.0.0.1"]);
        let refused = listed
            .fetch("http://127.0.0.1:9/x", "AC1", "token")
            .await
            .unwrap_err();
        assert!(matches!(refused, FetchError::NotAllowed(_)), "{refused:?}");
    }
}
