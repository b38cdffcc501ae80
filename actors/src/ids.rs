//! Identifier newtypes.
//!
//! A function that touches a tenant's data takes a [`TenantId`], not a bare
//! `Uuid`, so that an agent id can never be passed where a tenant id belongs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered identifier (UUIDv7, index friendly).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    };
}

id_newtype!(
    /// A business using agentry; every tenant-owned row carries one.
    TenantId
);
id_newtype!(
    /// An AI agent configured by a tenant.
    AgentId
);
id_newtype!(
    /// An embeddable widget in front of one agent.
    WidgetId
);
id_newtype!(
    /// A conversation between a visitor and an agent.
    ConversationId
);
id_newtype!(
    /// A tenant's dashboard user.
    UserId
);
id_newtype!(
    /// A site operator (the cross-tenant administrator realm).
    OperatorId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_string_form() {
        let tenant = TenantId::new();
        let parsed: TenantId = tenant.to_string().parse().unwrap();
        assert_eq!(tenant, parsed);
    }

    #[test]
    fn ids_serialize_as_bare_uuid_strings() {
        let agent = AgentId::new();
        let json = serde_json::to_string(&agent).unwrap();
        assert_eq!(json, format!("\"{agent}\""));
    }

    #[test]
    fn garbage_is_not_an_id() {
        assert!("not-a-uuid".parse::<TenantId>().is_err());
    }
}
