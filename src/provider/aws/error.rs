//! AWS errors as slipway errors: the address, the AWS error code, the message
//! and whether retrying can help.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::addr::Address;
use crate::provider::ProviderError;

/// Why slipway cannot talk to AWS at all.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AwsSetupError {
    #[error("no AWS credentials found ({detail})")]
    NoCredentials { detail: String },
    #[error("AWS rejected the credentials at {endpoint}: {detail}")]
    Identity { endpoint: String, detail: String },
}

impl AwsSetupError {
    pub fn hint(&self) -> &'static str {
        match self {
            AwsSetupError::NoCredentials { .. } => {
                "set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), run `aws sso login`, or run where an instance or web-identity role is available"
            }
            AwsSetupError::Identity { .. } => {
                "check that the credentials are current and for the intended account"
            }
        }
    }
}

/// Error codes that mean "AWS is busy or slow; the same call can succeed later".
const TRANSIENT: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "SlowDown",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "DependencyViolation",
    "IncorrectState",
    "ResourceInUseException",
];

/// Maps an SDK error to a per-resource failure.
pub fn sdk_error<E, R>(addr: &Address, operation: &str, err: &SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(_) => {
            let code = err.code().unwrap_or("Unknown").to_string();
            let message = err.message().unwrap_or("").to_string();
            let retryable = TRANSIENT.contains(&code.as_str());
            ProviderError::new(addr, &code, format!("{operation}: {message}"), retryable)
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ProviderError::new(
                addr,
                "NetworkError",
                format!("{operation}: {}", DisplayErrorContext(err)),
                true,
            )
        }
        _ => ProviderError::new(
            addr,
            "RequestError",
            format!("{operation}: {}", DisplayErrorContext(err)),
            false,
        ),
    }
}

/// The error code, when the error is a service error.
pub fn code_of<E, R>(err: &SdkError<E, R>) -> Option<&str>
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(_) => err.code(),
        _ => None,
    }
}

/// Whether an error code says the object does not exist.
pub fn is_absent(code: &str) -> bool {
    code.ends_with("NotFound")
        || code.ends_with("NotFoundException")
        || code == "NoSuchEntity"
        || code == "Gateway.NotAttached"
}

/// A call's result where "it does not exist" is an answer, not a failure:
/// `Ok(None)` for the codes [`is_absent`] knows.
pub fn absent_ok<T, E, R>(
    addr: &Address,
    operation: &str,
    result: Result<T, SdkError<E, R>>,
) -> Result<Option<T>, ProviderError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if code_of(&e).is_some_and(is_absent) => Ok(None),
        Err(e) => Err(sdk_error(addr, operation, &e)),
    }
}

pub fn not_supported(addr: &Address) -> ProviderError {
    ProviderError::new(
        addr,
        "NotSupported",
        format!(
            "the AWS provider does not manage `{}` resources",
            addr.kind_key()
        ),
        false,
    )
}

/// For a desired state that does not make sense to AWS.
pub fn invalid(addr: &Address, message: impl Into<String>) -> ProviderError {
    ProviderError::new(addr, "InvalidDesiredState", message, false)
}
