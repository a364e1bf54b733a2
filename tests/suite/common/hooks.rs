//! An SDK interceptor made of closures, for the tests that watch or bend single HTTP
//! exchanges: each closure gets the request or the response at one point of its way.

use aws_sdk_s3::config::http::{HttpRequest, HttpResponse};
use aws_sdk_s3::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeDeserializationInterceptorContextRef,
    BeforeTransmitInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use std::sync::Arc;

type ModifyRequest = Arc<dyn Fn(&mut HttpRequest) + Send + Sync>;
type ReadRequest = Arc<dyn Fn(&HttpRequest) + Send + Sync>;
type ReadResponse = Arc<dyn Fn(&HttpResponse) + Send + Sync>;
type ModifyResponse = Arc<dyn Fn(&mut HttpResponse) + Send + Sync>;

/// The interceptor: a name and the closures set, each run at the SDK hook it is named after
/// (`modify_unsigned_request` at `modify_before_signing`, `modify_request` at
/// `modify_before_transmit`, `read_request` at `read_before_transmit`,
/// `read_response` at `read_after_transmit`, `modify_response` at
/// `modify_before_deserialization`).
#[derive(Clone)]
pub struct Hooks {
    name: &'static str,
    modify_unsigned_request: Option<ModifyRequest>,
    modify_request: Option<ModifyRequest>,
    read_request: Option<ReadRequest>,
    read_response: Option<ReadResponse>,
    modify_response: Option<ModifyResponse>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks").field("name", &self.name).finish()
    }
}

/// A builder method that sets the closure `$field`, which takes a `$argument`.
macro_rules! setter {
    ($field:ident, $argument:ty) => {
        pub fn $field(mut self, hook: impl Fn($argument) + Send + Sync + 'static) -> Self {
            self.$field = Some(Arc::new(hook));
            self
        }
    };
}

impl Hooks {
    pub fn new(name: &'static str) -> Hooks {
        Hooks {
            name,
            modify_unsigned_request: None,
            modify_request: None,
            read_request: None,
            read_response: None,
            modify_response: None,
        }
    }

    // A change before signing is signed with the request: stores that check signatures
    // (SeaweedFS, real S3) accept it, where a change at `modify_request` is refused there.
    setter!(modify_unsigned_request, &mut HttpRequest);
    setter!(modify_request, &mut HttpRequest);
    setter!(read_request, &HttpRequest);
    setter!(read_response, &HttpResponse);
    setter!(modify_response, &mut HttpResponse);
}

/// One `Intercept` method that hands the context's request or response to a closure.
macro_rules! hook {
    ($method:ident, $context:ty, $field:ident, $part:ident) => {
        fn $method(
            &self,
            context: $context,
            _: &RuntimeComponents,
            _: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            if let Some(hook) = &self.$field {
                hook(context.$part());
            }
            Ok(())
        }
    };
}

impl Intercept for Hooks {
    fn name(&self) -> &'static str {
        self.name
    }

    hook!(
        modify_before_signing,
        &mut BeforeTransmitInterceptorContextMut<'_>,
        modify_unsigned_request,
        request_mut
    );
    hook!(
        modify_before_transmit,
        &mut BeforeTransmitInterceptorContextMut<'_>,
        modify_request,
        request_mut
    );
    hook!(
        read_before_transmit,
        &BeforeTransmitInterceptorContextRef<'_>,
        read_request,
        request
    );
    hook!(
        read_after_transmit,
        &BeforeDeserializationInterceptorContextRef<'_>,
        read_response,
        response
    );
    hook!(
        modify_before_deserialization,
        &mut BeforeDeserializationInterceptorContextMut<'_>,
        modify_response,
        response_mut
    );
}
