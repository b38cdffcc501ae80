//! The `agentry` binary: serve, migrate, and administrative commands.

use std::net::SocketAddr;
use std::process::ExitCode;

use agentry::configuration::Settings;
use agentry::db::{bootstrap, Store};
use agentry::startup::Application;
use agentry::{accounts, telemetry};
use agentry_actors::pii::{Region, Scrubber};
use agentry_actors::Secret;
use anyhow::Context;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use clap::{Parser, Subcommand};
use rand::RngCore;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "agentry",
    version,
    about = "Multi-tenant backend for website and phone AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default command).
    Serve {
        /// Address to listen on, overriding http.bind.
        #[arg(long)]
        bind: Option<SocketAddr>,
    },
    /// Create the database if needed and apply migrations.
    Migrate,
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage site operators (the cross-tenant admin realm).
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Generate keys for the production configuration.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The PII scrubber on lines of text (stdin to stdout, one JSON line each).
    Pii {
        #[command(subcommand)]
        command: PiiCommand,
    },
    /// The reply guardrails on JSON lines (stdin to stdout, one JSON line each).
    Guardrails {
        #[command(subcommand)]
        command: GuardrailsCommand,
    },
    /// Development helpers.
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
    /// Run the eval suite and print the pass rate per rule; fails below 100 %.
    Eval {
        /// The directory of `*.jsonl` case files.
        #[arg(long, default_value = "evals")]
        dir: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum DevCommand {
    /// A webhook receiver on 127.0.0.1 that prints each delivery and, given
    /// the endpoint's secret, checks its signature (401 when it does not match).
    WebhookEcho {
        #[arg(long, default_value_t = 8089)]
        port: u16,
        /// The endpoint's `whsec_` secret (as shown once when it was created).
        #[arg(long, env = "AGENTRY_WEBHOOK_ECHO_SECRET")]
        secret: Option<String>,
    },
}

#[derive(Subcommand)]
enum GuardrailsCommand {
    /// Finalize each `{"reply", "passages", "profile", "system_prompt"?}` line:
    /// `{"cleaned", "removed": {"<rule>": n}}`.
    Check,
}

#[derive(Subcommand)]
enum PiiCommand {
    /// Scrub each line: `{"text", "found": {"EMAIL": n, ..}}`.
    Scrub {
        /// Region for phone numbers written without a country code, or `none`.
        #[arg(long, default_value = "US", value_parser = parse_region)]
        region: DefaultRegion,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant and its owner; prints JSON with the tenant id.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        admin_email: String,
        #[arg(long)]
        admin_password: String,
    },
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Create an operator; prints JSON with the operator id.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print fresh encryption and signing keys as environment variables.
    Generate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve { bind: None });
    match command {
        Command::Keys {
            command: KeysCommand::Generate,
        } => {
            print_generated_keys();
            return Ok(());
        }
        Command::Pii {
            command: PiiCommand::Scrub { region },
        } => return scrub_stdin(region.0),
        Command::Guardrails {
            command: GuardrailsCommand::Check,
        } => {
            let (stdin, stdout) = (std::io::stdin().lock(), std::io::stdout().lock());
            agentry::text_tools::check_lines(stdin, stdout)?;
            return Ok(());
        }
        Command::Dev {
            command: DevCommand::WebhookEcho { port, secret },
        } => return webhook_echo(port, secret).await,
        Command::Eval { dir } => {
            let report = agentry::evals::run(&dir)?;
            print!("{}", report.table());
            anyhow::ensure!(report.all_passed(), "not every eval passed");
            return Ok(());
        }
        _ => {}
    }
    let mut settings = Settings::load()?;
    match command {
        Command::Serve { bind } => {
            if let Some(bind) = bind {
                settings.http.bind = bind;
            }
            serve(settings).await
        }
        Command::Migrate => {
            bootstrap::migrate(&settings.database)
                .await
                .context("migration failed")?;
            println!("{}", serde_json::json!({ "migrated": true }));
            Ok(())
        }
        Command::Tenant {
            command:
                TenantCommand::Create {
                    name,
                    admin_email,
                    admin_password,
                },
        } => {
            let store = bootstrap::prepare(&settings.database).await?;
            let created =
                accounts::create_tenant(&store, &name, &admin_email, Secret::new(admin_password))
                    .await?;
            println!("{}", serde_json::to_string(&created)?);
            close(store).await;
            Ok(())
        }
        Command::Operator {
            command: OperatorCommand::Create { email, password },
        } => {
            let store = bootstrap::prepare(&settings.database).await?;
            let operator = accounts::create_operator(&store, &email, Secret::new(password)).await?;
            println!(
                "{}",
                serde_json::json!({ "operator_id": operator, "email": email.trim().to_lowercase() })
            );
            close(store).await;
            Ok(())
        }
        Command::Keys { .. }
        | Command::Pii { .. }
        | Command::Guardrails { .. }
        | Command::Dev { .. }
        | Command::Eval { .. } => {
            unreachable!("handled before settings are loaded")
        }
    }
}

/// The default region of national-format phone numbers, if any.
#[derive(Clone, Copy, Debug)]
struct DefaultRegion(Option<Region>);

/// A CLDR region code (`US`, `GB` ...), or `none` for no default region.
fn parse_region(text: &str) -> Result<DefaultRegion, String> {
    let code = text.trim();
    if code.eq_ignore_ascii_case("none") {
        return Ok(DefaultRegion(None));
    }
    code.to_ascii_uppercase()
        .parse::<Region>()
        .map(|region| DefaultRegion(Some(region)))
        .map_err(|_| format!("{code:?} is not a region code (US, GB, FR ...) or none"))
}

fn scrub_stdin(region: Option<Region>) -> anyhow::Result<()> {
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    agentry::text_tools::scrub_lines(stdin, stdout, &Scrubber::new(region))?;
    Ok(())
}

async fn close(store: Store) {
    store.pool().close().await;
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let telemetry = telemetry::init_logging(&settings.log, &settings.telemetry)
        .context("telemetry.otlp_endpoint")?;
    let profile = settings.profile;
    let public_url = settings.http.public_url.clone();
    let app = Application::build(settings).await?;
    let address = app.local_addr()?;
    let metrics = app.metrics_addr()?;
    tracing::info!(%address, %metrics, %profile, "agentry listening");
    if let Some(demo) = &app.seeded_demo {
        println!(
            "\nDemo tenant \"{}\" created.\n  Dashboard:           {public_url}/app  (the API: POST {public_url}/api/v1/auth/login)  email {}  password {}\n  Operator login:      POST {public_url}/api/v1/admin/auth/login  email {}  password {}\n  Widget public key:   {}\n",
            demo.tenant_name,
            demo.admin_email,
            demo.admin_password,
            demo.operator_email,
            demo.operator_password,
            demo.widget_public_key,
        );
        if let Some(echo) = &demo.webhook_echo {
            println!(
                "  Webhook endpoint:    {} (every event type), served by this server's echo receiver,\n                       which prints each delivery here. Its secret (shown once): {}\n  To receive elsewhere: agentry dev webhook-echo --secret {} (and point the endpoint at it)\n",
                echo.url, echo.secret, echo.secret,
            );
        }
    }
    let served = app.run_until(shutdown_signal()).await;
    // The last turns' spans go out before the process does.
    telemetry.shutdown().await;
    served
}

/// Resolves on Ctrl-C or SIGTERM, so in-flight requests finish before exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}

async fn webhook_echo(port: u16, secret: Option<String>) -> anyhow::Result<()> {
    let receiver = agentry::webhook_echo::EchoReceiver::new(secret.as_deref())
        .map_err(anyhow::Error::msg)
        .context("--secret")?;
    let (listener, address) = agentry::webhook_echo::bind(port)
        .await
        .with_context(|| format!("could not listen on 127.0.0.1:{port}"))?;
    println!(
        "webhook echo receiver on http://{address}{} ({})",
        agentry::webhook_echo::PATH,
        if secret.is_some() {
            "checking signatures"
        } else {
            "not checking signatures: pass --secret"
        }
    );
    receiver
        .serve(listener, shutdown_signal())
        .await
        .context("webhook echo receiver")
}

fn print_generated_keys() {
    let mut encryption = [0u8; 32];
    let mut signing = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut encryption);
    rand::rngs::OsRng.fill_bytes(&mut signing);
    let mut suffix = [0u8; 3];
    rand::rngs::OsRng.fill_bytes(&mut suffix);
    let key_id = format!(
        "k{}{}",
        chrono::Utc::now().format("%Y%m%d"),
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    println!("# Production keys for agentry. Keep them secret; keep old encryption keys listed after rotating.");
    println!("AGENTRY__SECURITY__ENCRYPTION_CURRENT_KEY_ID={key_id}");
    println!(
        "AGENTRY__SECURITY__ENCRYPTION_KEYS__{}={}",
        key_id.to_uppercase(),
        BASE64.encode(encryption)
    );
    println!(
        "AGENTRY__SECURITY__SIGNING__TOKEN_KEY={}",
        BASE64.encode(signing)
    );
}
