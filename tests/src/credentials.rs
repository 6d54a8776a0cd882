//! Credential providers for the AWS SDK that fail as a real chain does: a blip of
//! instance metadata or STS, or no source at all.

use std::sync::atomic::{AtomicUsize, Ordering};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, future};

/// A provider that fails, then (for a blip) gives test credentials.
#[derive(Debug)]
pub struct FailingCredentials {
    /// Calls still to fail.
    failures: AtomicUsize,
    /// Whether it fails as a chain with no source does, not as a blip.
    no_source: bool,
}

impl FailingCredentials {
    /// Fails its first `failures` calls as instance metadata or STS do in a blip,
    /// then gives test credentials (`usize::MAX`: every call fails).
    pub fn blip(failures: usize) -> Self {
        Self {
            failures: AtomicUsize::new(failures),
            no_source: false,
        }
    }

    /// Fails every call as the default chain does with no environment variables,
    /// no profile and no role.
    pub fn no_source() -> Self {
        Self {
            failures: AtomicUsize::new(usize::MAX),
            no_source: true,
        }
    }
}

impl ProvideCredentials for FailingCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                if n == usize::MAX {
                    Some(n)
                } else {
                    n.checked_sub(1)
                }
            })
            .is_ok();
        future::ProvideCredentials::ready(match (failing, self.no_source) {
            (false, _) => Ok(Credentials::new("test", "test", None, None, "blip")),
            (true, false) => Err(CredentialsError::provider_error(
                "the instance metadata service did not answer",
            )),
            (true, true) => Err(CredentialsError::not_loaded(
                "no providers in chain provided credentials",
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    fn outcomes(p: &FailingCredentials, calls: usize) -> Vec<bool> {
        (0..calls)
            .map(|_| now(p.provide_credentials()).is_ok())
            .collect()
    }

    /// The answer of a provider that is ready at once.
    fn now(f: future::ProvideCredentials<'_>) -> aws_credential_types::provider::Result {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => panic!("not ready at once"),
        }
    }

    #[test]
    fn a_blip_fails_its_first_calls_and_no_source_fails_them_all() {
        assert_eq!(
            outcomes(&FailingCredentials::blip(2), 4),
            [false, false, true, true]
        );
        assert_eq!(
            outcomes(&FailingCredentials::blip(usize::MAX), 3),
            [false; 3]
        );
        let none = FailingCredentials::no_source();
        assert_eq!(outcomes(&none, 3), [false; 3]);
        let err = now(none.provide_credentials()).unwrap_err();
        assert!(
            matches!(err, CredentialsError::CredentialsNotLoaded(_)),
            "{err:?}"
        );
    }
}
