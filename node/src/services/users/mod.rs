//! Users and their bearer tokens, in the meta group: a user is found by the SHA-256 of its
//! token (tokens themselves are never stored). The HTTP part signs users up and identifies the
//! caller of every authenticated endpoint ([`Caller`]).

pub mod http;

use rkyv::{Archive, Deserialize, Serialize};

pub use self::http::{Caller, identify};
use super::{Client, Consistency, Kv, KvRead, Payload, Route, Service, ServiceId, StoreError};
use crate::services::client::CallError;

/// A user.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User id (`u` and 16 hex digits).
    pub id: String,
    /// Display name.
    pub name: String,
}

/// Users' commands.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Creates `user`, reachable by `token_hash`.
    Create {
        /// SHA-256 of the bearer token, hex.
        token_hash: String,
        /// The new user.
        user: User,
    },
}

/// Why a users command changed nothing.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Another user has this token (a 2^-256 chance, or a replayed command).
    #[error("the token is in use")]
    TokenInUse,
}

/// Users' queries.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// The user whose token hashes to `token_hash`.
    ByToken {
        /// SHA-256 of the bearer token, hex.
        token_hash: String,
    },
    /// The user with id `id` (users created before the by-id rows existed are not found).
    ById {
        /// User id.
        id: String,
    },
}

/// The row of a user by id (`id/{id}`; token hashes are 64 hex digits, so they never clash).
fn id_key(id: &str) -> Vec<u8> {
    format!("id/{id}").into_bytes()
}

/// See the module docs.
#[derive(Debug)]
pub struct Users;

impl Service for Users {
    const ID: ServiceId = 1;
    const NAME: &'static str = "users";
    type Command = Command;
    type Reply = ();
    type Rejection = Rejection;
    type Query = Query;
    type Answer = Option<User>;

    fn apply(kv: &mut dyn Kv, command: Command) -> Result<Result<(), Rejection>, StoreError> {
        match command {
            Command::Create { token_hash, user } => {
                if kv.get(token_hash.as_bytes())?.is_some() {
                    return Ok(Err(Rejection::TokenInUse));
                }
                let encoded = user.encode()?;
                kv.put(&id_key(&user.id), encoded.clone());
                kv.put(token_hash.as_bytes(), encoded);
                Ok(Ok(()))
            }
        }
    }

    fn query(kv: &dyn KvRead, query: Query) -> Result<Option<User>, StoreError> {
        match query {
            Query::ByToken { token_hash } => {
                Ok(kv.get(token_hash.as_bytes())?.map(|b| User::decode(&b)).transpose()?)
            }
            Query::ById { id } => Ok(kv.get(&id_key(&id))?.map(|b| User::decode(&b)).transpose()?),
        }
    }
}

/// The user whose token hashes to `token_hash`: from this node's meta state when present, else
/// by a linearizable lookup on the meta leader (a user created a moment ago elsewhere may not
/// be applied here yet).
pub async fn by_token(client: &Client, token_hash: &str) -> Result<Option<User>, CallError> {
    let query = Query::ByToken { token_hash: token_hash.to_string() };
    if let Ok(Some(user)) = client.read::<Users>(Route::Meta, &query, Consistency::Local).await {
        return Ok(Some(user));
    }
    client.read::<Users>(Route::Meta, &query, Consistency::Linearizable).await
}

/// The user with id `id`: from this node's meta state when present, else by a linearizable
/// lookup on the meta leader (as [`by_token`]).
pub async fn by_id(client: &Client, id: &str) -> Result<Option<User>, CallError> {
    let query = Query::ById { id: id.to_string() };
    if let Ok(Some(user)) = client.read::<Users>(Route::Meta, &query, Consistency::Local).await {
        return Ok(Some(user));
    }
    client.read::<Users>(Route::Meta, &query, Consistency::Linearizable).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemKv;

    #[test]
    fn users_are_found_by_token_hash_and_a_hash_is_used_once() {
        let mut kv = MemKv::default();
        let ann = User { id: "u1".into(), name: "Ann".into() };
        let create = |user: &User| Command::Create { token_hash: "h1".into(), user: user.clone() };
        assert_eq!(Users::apply(&mut kv, create(&ann)).expect("apply"), Ok(()));
        let bob = User { id: "u2".into(), name: "Bob".into() };
        assert_eq!(Users::apply(&mut kv, create(&bob)).expect("apply"), Err(Rejection::TokenInUse));
        let found = Users::query(&kv, Query::ByToken { token_hash: "h1".into() }).expect("query");
        assert_eq!(found, Some(ann.clone()));
        assert_eq!(Users::query(&kv, Query::ByToken { token_hash: "h2".into() }).expect("query"), None);
        let by_id = |id: &str| Users::query(&kv, Query::ById { id: id.into() }).expect("query");
        assert_eq!(by_id("u1"), Some(ann));
        assert_eq!(by_id("u2"), None, "a refused create stores nothing");
    }
}
