//! The one way glue calls a Durable Object (a leaf): [`stub`] finds the object, [`Call`]
//! encodes a typed [`Op`] (its path, method, query, body and headers) and [`Call::send`] sends
//! it. Objects decode what they receive with [`Op::decode`].

use wasm_bindgen::JsValue;
use worker::{Env, Headers, Method, Request, RequestInit, Response, Stub};

use crate::http::error::ApiError;
use crate::internal::{Binding, Op};

use super::http::internal;

/// The stub of the object named `name` in `binding`'s namespace.
pub(crate) fn stub(env: &Env, binding: Binding, name: &str) -> Result<Stub, ApiError> {
    let ns = env.durable_object(binding.name()).map_err(internal)?;
    ns.id_from_name(name)
        .and_then(|id| id.get_stub())
        .map_err(internal)
}

/// One internal call, built up before it is sent.
#[derive(Clone)]
pub(crate) struct Call {
    op: Op,
    query: Option<String>,
    body: Option<String>,
    headers: Headers,
}

impl Call {
    /// A call of `op` without query, body or headers.
    pub(crate) fn new(op: Op) -> Self {
        Self {
            op,
            query: None,
            body: None,
            headers: Headers::new(),
        }
    }

    /// The body (for operations that take one).
    pub(crate) fn body(mut self, body: String) -> Self {
        self.body = Some(body);
        self
    }

    /// A query string (without `?`).
    pub(crate) fn query(mut self, query: &str) -> Self {
        if !query.is_empty() {
            self.query = Some(query.to_string());
        }
        self
    }

    /// One request header.
    pub(crate) fn header(self, name: &str, value: &str) -> Result<Self, ApiError> {
        self.headers.set(name, value).map_err(internal)?;
        Ok(self)
    }

    /// Every header of `headers`, except those `keep` refuses.
    pub(crate) fn headers_from(
        self,
        headers: &Headers,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Self, ApiError> {
        for (k, v) in headers.entries() {
            if keep(&k) {
                self.headers.set(&k, &v).map_err(internal)?;
            }
        }
        Ok(self)
    }

    /// Sends the call to `stub`. The error is the runtime's (the object was reset, overloaded
    /// or unreachable); the caller decides what it means for its own caller.
    pub(crate) async fn send(self, stub: &Stub) -> worker::Result<Response> {
        let mut url = format!("https://object.internal{}", self.op.path());
        if let Some(q) = &self.query {
            url.push('?');
            url.push_str(q);
        }
        let mut init = RequestInit::new();
        init.with_headers(self.headers);
        if self.op.has_body() {
            init.with_method(Method::Post)
                .with_body(Some(JsValue::from_str(self.body.as_deref().unwrap_or(""))));
        } else {
            init.with_method(Method::Get);
        }
        crate::probe::note(crate::probe::Call::Internal);
        stub.fetch_with_request(Request::new_with_init(&url, &init)?)
            .await
    }
}
