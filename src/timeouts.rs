//! How long s3state waits for S3, DynamoDB and STS: the bounds every AWS SDK client it builds
//! is given ([`Timeouts`]), and the recognition of a request the SDK gave up on because one of
//! them ran out ([`crate::Error::Timeout`]).
//!
//! Without them a request through a proxy or load balancer that accepts the connection and
//! never answers waits forever, and so does whatever waits on it: a `pull`, a lock held until
//! its write returns, a gateway request.

use crate::error::{Error, Result};
use std::fmt;
use std::time::Duration;

/// How long a request to S3, DynamoDB or STS may take before s3state gives up on it.
///
/// Every AWS SDK client s3state builds gets them (the S3 client, the DynamoDB client of
/// `dynamodb_table`, the STS client that assumes a role), and a client given with
/// [`crate::S3Builder::with_client`] gets those it does not set itself. A request given up on
/// is [`Error::Timeout`], naming the operation, the object and the setting to raise.
///
/// | setting | default | bounds | variable | flag |
/// |---|---|---|---|---|
/// | `connect` | 5 s | opening a connection (TCP and TLS) | `S3STATE_CONNECT_TIMEOUT` | `--connect-timeout` |
/// | `read` | 30 s | sending a request and receiving the start of its answer; then each chunk of a body | `S3STATE_READ_TIMEOUT` | `--read-timeout` |
/// | `operation_attempt` | 60 s | one attempt of an operation, everything included | `S3STATE_OPERATION_ATTEMPT_TIMEOUT` | `--operation-attempt-timeout` |
/// | `operation` | 120 s | an operation with all its retries | `S3STATE_OPERATION_TIMEOUT` | `--operation-timeout` |
///
/// Why these defaults:
///
/// - **connect 5 s.** A connection to S3 opens in milliseconds, and a few hundred across an
///   ocean or a VPN; the SDK's own default is 3.1 s. Five seconds leaves room for a slow DNS
///   answer or a busy proxy, and a host that does not answer at all (a firewall dropping
///   packets) is given up on quickly, then retried by the SDK.
/// - **read 30 s.** S3 answers a state-sized request in well under a second; 30 s is far
///   beyond a slow answer, yet short enough that a proxy which accepts a request and never
///   answers is noticed in half a minute. The SDK counts the upload of the request's body in
///   it: raise it for states of tens of megabytes over a slow link. s3state also bounds each
///   chunk of a body being downloaded by it (the SDK bounds only the wait for the headers).
/// - **operation attempt 60 s.** Twice the read bound, so that an attempt that is slow but
///   answering (a large state, a long listing page) completes; an attempt over it is retried.
/// - **operation 120 s.** The SDK tries an operation up to three times by default
///   ([`crate::S3Builder::with_max_attempts`]); two minutes lets three attempts that each hit
///   the read bound run and be retried, and caps everything else. It is the longest a single
///   S3 request can hold up a command, a lock or a gateway request.
///
/// Durations in variables and flags are written as Terraform writes them (Go's
/// `time.ParseDuration`): `30s`, `2m`, `1m30s`, `500ms`. None may be zero.
///
/// ```
/// use s3state::{S3Builder, Timeouts};
/// use std::time::Duration;
///
/// let builder = S3Builder::new().with_timeouts(Timeouts {
///     read: Duration::from_secs(10),
///     operation: Duration::from_secs(60),
///     ..Timeouts::default()
/// });
/// # let _ = builder;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a connection, TLS handshake included. Default 5 s.
    pub connect: Duration,
    /// From sending a request to the first byte of its answer (the upload of the request's
    /// body included), and between two chunks of a body being read. Default 30 s.
    pub read: Duration,
    /// One attempt of an operation, from start to parsed answer. Default 60 s.
    pub operation_attempt: Duration,
    /// A whole operation, every retry included. Default 120 s.
    pub operation: Duration,
}

impl Timeouts {
    /// The default connect timeout: 5 s.
    pub const DEFAULT_CONNECT: Duration = Duration::from_secs(5);
    /// The default read timeout: 30 s.
    pub const DEFAULT_READ: Duration = Duration::from_secs(30);
    /// The default timeout of one attempt: 60 s.
    pub const DEFAULT_OPERATION_ATTEMPT: Duration = Duration::from_secs(60);
    /// The default timeout of a whole operation, retries included: 120 s.
    pub const DEFAULT_OPERATION: Duration = Duration::from_secs(120);

    /// Parses a duration as the `S3STATE_*_TIMEOUT` variables and the `--*-timeout` flags take
    /// it (Go's `time.ParseDuration`, as Terraform writes durations): `30s`, `2m`, `1m30s`,
    /// `500ms`. A unit is required and zero is refused.
    ///
    /// ```
    /// use s3state::Timeouts;
    /// use std::time::Duration;
    /// assert_eq!(Timeouts::parse_duration("1m30s")?, Duration::from_secs(90));
    /// assert!(Timeouts::parse_duration("30").is_err()); // a unit is required
    /// assert!(Timeouts::parse_duration("0s").is_err());
    /// # Ok::<(), String>(())
    /// ```
    pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
        let duration = crate::s3::parse_go_duration(text.trim())
            .map_err(|_| format!("{text:?} is not a duration; write it as 30s, 2m or 1m30s"))?;
        if duration.is_zero() {
            return Err(
                "a timeout of zero would give up on every request; give a duration such as 30s"
                    .into(),
            );
        }
        Ok(duration)
    }

    /// The value of one setting.
    pub fn get(&self, setting: TimeoutSetting) -> Duration {
        match setting {
            TimeoutSetting::Connect => self.connect,
            TimeoutSetting::Read => self.read,
            TimeoutSetting::OperationAttempt => self.operation_attempt,
            TimeoutSetting::Operation => self.operation,
        }
    }

    fn set(&mut self, setting: TimeoutSetting, value: Duration) {
        match setting {
            TimeoutSetting::Connect => self.connect = value,
            TimeoutSetting::Read => self.read = value,
            TimeoutSetting::OperationAttempt => self.operation_attempt = value,
            TimeoutSetting::Operation => self.operation = value,
        }
    }

    /// The SDK's form of these bounds.
    pub fn to_timeout_config(&self) -> aws_sdk_s3::config::timeout::TimeoutConfig {
        aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .read_timeout(self.read)
            .operation_attempt_timeout(self.operation_attempt)
            .operation_timeout(self.operation)
            .build()
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Self::DEFAULT_CONNECT,
            read: Self::DEFAULT_READ,
            operation_attempt: Self::DEFAULT_OPERATION_ATTEMPT,
            operation: Self::DEFAULT_OPERATION,
        }
    }
}

/// One of the [`Timeouts`]: the one that ran out, in [`Error::Timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutSetting {
    /// [`Timeouts::connect`].
    Connect,
    /// [`Timeouts::read`].
    Read,
    /// [`Timeouts::operation_attempt`].
    OperationAttempt,
    /// [`Timeouts::operation`].
    Operation,
}

impl TimeoutSetting {
    /// Every setting.
    pub const ALL: [TimeoutSetting; 4] = [
        TimeoutSetting::Connect,
        TimeoutSetting::Read,
        TimeoutSetting::OperationAttempt,
        TimeoutSetting::Operation,
    ];

    /// The field of [`Timeouts`] (and the key in the gateway's `[s3]` section, with
    /// `_timeout` appended).
    pub fn field(self) -> &'static str {
        match self {
            TimeoutSetting::Connect => "connect",
            TimeoutSetting::Read => "read",
            TimeoutSetting::OperationAttempt => "operation_attempt",
            TimeoutSetting::Operation => "operation",
        }
    }

    /// The environment variable that sets it.
    pub fn env(self) -> &'static str {
        match self {
            TimeoutSetting::Connect => "S3STATE_CONNECT_TIMEOUT",
            TimeoutSetting::Read => "S3STATE_READ_TIMEOUT",
            TimeoutSetting::OperationAttempt => "S3STATE_OPERATION_ATTEMPT_TIMEOUT",
            TimeoutSetting::Operation => "S3STATE_OPERATION_TIMEOUT",
        }
    }

    /// The `s3state` flag that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            TimeoutSetting::Connect => "--connect-timeout",
            TimeoutSetting::Read => "--read-timeout",
            TimeoutSetting::OperationAttempt => "--operation-attempt-timeout",
            TimeoutSetting::Operation => "--operation-timeout",
        }
    }

    /// The builder field name, as [`Error::InvalidConfig`] names it.
    fn config_field(self) -> &'static str {
        match self {
            TimeoutSetting::Connect => "connect_timeout",
            TimeoutSetting::Read => "read_timeout",
            TimeoutSetting::OperationAttempt => "operation_attempt_timeout",
            TimeoutSetting::Operation => "operation_timeout",
        }
    }
}

impl fmt::Display for TimeoutSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutSetting::Connect => "connect timeout",
            TimeoutSetting::Read => "read timeout",
            TimeoutSetting::OperationAttempt => "operation attempt timeout",
            TimeoutSetting::Operation => "operation timeout",
        })
    }
}

/// The timeouts a builder was given, each unset one taking its default (or, for a client
/// given whole, the client's own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TimeoutOverrides([Option<Duration>; 4]);

impl TimeoutOverrides {
    fn index(setting: TimeoutSetting) -> usize {
        match setting {
            TimeoutSetting::Connect => 0,
            TimeoutSetting::Read => 1,
            TimeoutSetting::OperationAttempt => 2,
            TimeoutSetting::Operation => 3,
        }
    }

    /// Every setting given.
    pub(crate) fn all(timeouts: Timeouts) -> Self {
        let mut overrides = Self::default();
        for setting in TimeoutSetting::ALL {
            overrides.set(setting, timeouts.get(setting));
        }
        overrides
    }

    pub(crate) fn set(&mut self, setting: TimeoutSetting, value: Duration) {
        self.0[Self::index(setting)] = Some(value);
    }

    /// Reads the `S3STATE_*_TIMEOUT` variables; an error names the first malformed one.
    pub(crate) fn from_env(
        var: &dyn Fn(&str) -> Option<String>,
    ) -> std::result::Result<Self, (&'static str, &'static str, String)> {
        let mut overrides = Self::default();
        for setting in TimeoutSetting::ALL {
            if let Some(text) = var(setting.env()) {
                let value = Timeouts::parse_duration(&text)
                    .map_err(|message| (setting.config_field(), setting.env(), message))?;
                overrides.set(setting, value);
            }
        }
        Ok(overrides)
    }

    /// Refuses a zero duration given in code (variables and flags are checked as parsed).
    pub(crate) fn validate(&self) -> Result<()> {
        for setting in TimeoutSetting::ALL {
            if self.0[Self::index(setting)] == Some(Duration::ZERO) {
                return Err(Error::InvalidConfig {
                    field: setting.config_field(),
                    env: setting.env(),
                    message: "a timeout of zero would give up on every request; give a duration such as 30s".into(),
                });
            }
        }
        Ok(())
    }

    /// The bounds in effect: those given, else the defaults.
    pub(crate) fn resolved(&self) -> Timeouts {
        let mut timeouts = Timeouts::default();
        for setting in TimeoutSetting::ALL {
            if let Some(value) = self.0[Self::index(setting)] {
                timeouts.set(setting, value);
            }
        }
        timeouts
    }

    /// `existing` (a client's own timeout configuration) with the settings given here
    /// replacing its own, and the defaults filling what neither sets. A bound the client
    /// disabled explicitly stays disabled unless it is given here.
    pub(crate) fn applied_to(
        &self,
        existing: Option<&aws_sdk_s3::config::timeout::TimeoutConfig>,
    ) -> aws_sdk_s3::config::timeout::TimeoutConfig {
        // Only the settings given are set: the SDK's `set_*(None)` would disable a bound,
        // not leave it unset for the client's own or the default to fill.
        let mut given = aws_sdk_s3::config::timeout::TimeoutConfig::builder();
        if let Some(connect) = self.0[0] {
            given = given.connect_timeout(connect);
        }
        if let Some(read) = self.0[1] {
            given = given.read_timeout(read);
        }
        if let Some(attempt) = self.0[2] {
            given = given.operation_attempt_timeout(attempt);
        }
        if let Some(operation) = self.0[3] {
            given = given.operation_timeout(operation);
        }
        let mut merged = given.build();
        if let Some(existing) = existing {
            merged.take_defaults_from(existing);
        }
        merged.take_defaults_from(&Timeouts::default().to_timeout_config());
        merged
    }
}

/// Which timeout made the SDK give up, and after how long, when `err` (or an error in its
/// source chain) is one: recognised by the SDK's own messages, since the types that carry
/// them are private to the SDK. `after` is `None` when the message does not say.
pub(crate) fn timed_out(
    err: &(dyn std::error::Error + 'static),
) -> Option<(TimeoutSetting, Option<Duration>)> {
    const MARKERS: [(&str, TimeoutSetting); 4] = [
        (
            "HTTP connect timeout occurred after ",
            TimeoutSetting::Connect,
        ),
        ("HTTP read timeout occurred after ", TimeoutSetting::Read),
        (
            "operation attempt timeout (single attempt) occurred after ",
            TimeoutSetting::OperationAttempt,
        ),
        (
            "operation timeout (all attempts including retries) occurred after ",
            TimeoutSetting::Operation,
        ),
    ];
    let mut current = Some(err);
    while let Some(error) = current {
        let text = error.to_string();
        for (marker, setting) in MARKERS {
            if let Some(at) = text.find(marker) {
                let rest = &text[at + marker.len()..];
                let end = rest
                    .find(|c: char| c.is_whitespace() || c == ')' || c == ',' || c == ';')
                    .unwrap_or(rest.len());
                let after = crate::s3::parse_go_duration(&rest[..end]).ok();
                return Some((setting, after));
            }
        }
        current = error.source();
    }
    None
}

/// [`timed_out`] for an SDK error: also recognises a timeout whose message is not the SDK's
/// usual one (an operation timeout; a connection timeout of unknown kind, taken as the read
/// timeout), but nothing that got an answer.
pub(crate) fn sdk_timed_out<E, R>(
    err: &aws_sdk_s3::error::SdkError<E, R>,
) -> Option<(TimeoutSetting, Option<Duration>)>
where
    E: std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    use aws_sdk_s3::error::SdkError;
    match err {
        SdkError::TimeoutError(_) => {
            Some(timed_out(err).unwrap_or((TimeoutSetting::Operation, None)))
        }
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            Some(timed_out(err).unwrap_or((TimeoutSetting::Read, None)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Message(&'static str, Option<Box<Message>>);
    impl fmt::Display for Message {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Message {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|m| m as _)
        }
    }

    #[test]
    fn the_sdks_timeout_messages_name_the_setting_and_its_value() {
        let cases = [
            (
                "HTTP read timeout occurred after 1.5s",
                TimeoutSetting::Read,
                Duration::from_millis(1500),
            ),
            (
                "HTTP connect timeout occurred after 250ms",
                TimeoutSetting::Connect,
                Duration::from_millis(250),
            ),
            (
                "operation attempt timeout (single attempt) occurred after 60s",
                TimeoutSetting::OperationAttempt,
                Duration::from_secs(60),
            ),
            (
                "operation timeout (all attempts including retries) occurred after 2s",
                TimeoutSetting::Operation,
                Duration::from_secs(2),
            ),
        ];
        for (text, setting, after) in cases {
            let err = Message("dispatch failure", Some(Box::new(Message(text, None))));
            assert_eq!(timed_out(&err), Some((setting, Some(after))), "{text}");
        }
        assert_eq!(timed_out(&Message("connection reset", None)), None);
    }

    #[test]
    fn given_settings_replace_a_clients_own_and_defaults_fill_the_rest() {
        use aws_sdk_s3::config::timeout::TimeoutConfig;
        let client = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(1))
            .read_timeout(Duration::from_secs(2))
            .build();
        let mut given = TimeoutOverrides::default();
        given.set(TimeoutSetting::Read, Duration::from_secs(9));
        let merged = given.applied_to(Some(&client));
        assert_eq!(merged.connect_timeout(), Some(Duration::from_secs(1)));
        assert_eq!(merged.read_timeout(), Some(Duration::from_secs(9)));
        assert_eq!(
            merged.operation_attempt_timeout(),
            Some(Timeouts::DEFAULT_OPERATION_ATTEMPT)
        );
        assert_eq!(
            merged.operation_timeout(),
            Some(Timeouts::DEFAULT_OPERATION)
        );
        let disabled = TimeoutConfig::disabled();
        let merged = TimeoutOverrides::default().applied_to(Some(&disabled));
        assert_eq!(
            merged.operation_timeout(),
            None,
            "explicitly disabled stays so"
        );
    }

    #[test]
    fn zero_and_unitless_durations_are_refused() {
        assert!(Timeouts::parse_duration("0").is_err());
        assert!(Timeouts::parse_duration("0s").is_err());
        assert!(Timeouts::parse_duration("5").is_err());
        assert_eq!(
            Timeouts::parse_duration("2m").unwrap(),
            Duration::from_secs(120)
        );
        let mut zero = TimeoutOverrides::default();
        zero.set(TimeoutSetting::Operation, Duration::ZERO);
        assert!(zero.validate().is_err());
    }
}
