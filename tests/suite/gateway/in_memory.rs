//! A gateway client without sockets: the gateway's answers to state requests
//! (`s3state::server::handle_state_request`) over the hookable in-memory store, for the
//! tests that need a request's store calls at an exact moment.

use crate::common::gateway::{lock_body, state_body};
use crate::common::hooked::Hooked;
use bytes::Bytes;
use s3state::server::{
    GatewayStore, StateMethod, StateRequest, StateResponse, handle_state_request,
};

impl GatewayStore for Hooked {
    fn for_writes(&self) -> Self {
        self.clone()
    }
}

/// A principal sending requests about one state.
#[derive(Clone)]
pub struct Client {
    pub store: Hooked,
    pub principal: &'static str,
    pub admin: bool,
}

impl Client {
    pub fn new(store: &Hooked, principal: &'static str) -> Self {
        Client {
            store: store.clone(),
            principal,
            admin: false,
        }
    }

    pub fn admin(store: &Hooked, principal: &'static str) -> Self {
        Client {
            admin: true,
            ..Client::new(store, principal)
        }
    }

    pub async fn send(&self, method: StateMethod, lock_id: Option<&str>, body: &[u8]) -> Answer {
        let request = StateRequest {
            method,
            state_name: "review".into(),
            principal: self.principal.into(),
            admin: self.admin,
            lock_id: lock_id.map(str::to_owned),
            body: Bytes::copy_from_slice(body),
            content_md5: None,
        };
        Answer(handle_state_request(&self.store, request).await)
    }

    pub async fn lock(&self, id: &str) -> Answer {
        self.send(StateMethod::Lock, None, &lock_body(id, self.principal))
            .await
    }

    pub async fn unlock(&self, id: &str) -> Answer {
        self.send(StateMethod::Unlock, None, &lock_body(id, self.principal))
            .await
    }

    /// A POST of serial `serial` with output `n`, under `lock_id` when given.
    pub async fn post(&self, lock_id: Option<&str>, lineage: &str, serial: u64, n: u64) -> Answer {
        self.send(
            StateMethod::Update,
            lock_id,
            &state_body(lineage, serial, n),
        )
        .await
    }

    pub async fn delete(&self, lock_id: Option<&str>) -> Answer {
        self.send(StateMethod::Delete, lock_id, b"").await
    }
}

/// A gateway answer, with its body shown when a test fails.
pub struct Answer(pub StateResponse);

impl Answer {
    pub fn status(&self) -> u16 {
        self.0.status
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.body).trim().to_owned()
    }

    /// Asserts the status, naming the body when it is another.
    #[track_caller]
    pub fn expect(self, status: u16, what: &str) -> Self {
        assert_eq!(self.status(), status, "{what}: {}", self.text());
        self
    }
}
