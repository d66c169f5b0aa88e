//! The HTTP edges' settings: `[aws_kms]` (the AWS KMS JSON API) and
//! `[vault_transit]` (the Vault Transit API), from the file and the flags
//! `--aws-kms-listen` and `--vault-listen`. Like the gRPC listener, each is
//! plaintext only on loopback; elsewhere it needs `[tls]` (or
//! `allow_insecure`), and `--dev` keeps it on loopback.

use std::net::SocketAddr;

use super::file::{FileAwsKms, FileVaultTransit};
use super::listeners::socket_addr;
use super::ConfigError;

/// The AWS KMS edge, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsKmsConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// The region of its ARNs and signature scope.
    pub region: String,
    /// The 12-digit account of its ARNs.
    pub account_id: String,
}

/// The Vault Transit edge, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultTransitConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// The mount path (`/v1/<mount>/...`).
    pub mount: String,
}

/// The web console, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// How long a session lasts without a request.
    pub session_idle: std::time::Duration,
    /// On only because `--dev` turns it on (a failed bind is then a
    /// warning, not an error: another dev server may hold the port).
    pub dev_default: bool,
}

/// Where `--dev` serves the console unless told otherwise.
pub const DEV_CONSOLE_LISTEN: &str = "127.0.0.1:8080";

/// `console_listen`, `--console-listen` and `console_session_idle`.
pub(super) fn console(
    flag: Option<String>,
    file: Option<String>,
    idle: Option<&str>,
    dev: bool,
) -> Result<Option<ConsoleConfig>, ConfigError> {
    let session_idle = match idle {
        None => std::time::Duration::from_secs(15 * 60),
        Some(v) => {
            let d = humantime::parse_duration(v).map_err(|e| {
                ConfigError::Invalid(format!("console_session_idle {v:?}: {e} (say e.g. \"15m\")"))
            })?;
            if d < std::time::Duration::from_secs(60) || d > std::time::Duration::from_secs(12 * 3600) {
                return Err(ConfigError::Invalid(format!(
                    "console_session_idle {v:?}: must be between 1m and 12h"
                )));
            }
            d
        }
    };
    let given = flag.or(file);
    let dev_default = given.is_none() && dev;
    let Some(listen) = given.or_else(|| dev.then(|| DEV_CONSOLE_LISTEN.to_string())) else {
        if idle.is_some() {
            return Err(ConfigError::Invalid(
                "console_session_idle: give console_listen (or --console-listen) to serve the console".into(),
            ));
        }
        return Ok(None);
    };
    let listen = socket_addr("console_listen", &listen, DEV_CONSOLE_LISTEN)?;
    Ok(Some(ConsoleConfig { listen, session_idle, dev_default }))
}

/// The default region: one that no AWS endpoint answers, so a client that
/// misses the endpoint override fails instead of reaching AWS.
pub const DEFAULT_REGION: &str = "keyward-1";
/// The default account in ARNs.
pub const DEFAULT_ACCOUNT: &str = "000000000000";

/// `[aws_kms]` and `--aws-kms-listen`: on when either gives an address.
pub(super) fn aws_kms(
    flag: Option<String>,
    file: Option<FileAwsKms>,
) -> Result<Option<AwsKmsConfig>, ConfigError> {
    let file = file.unwrap_or_default();
    let Some(listen) = flag.or(file.listen) else {
        if file.region.is_some() || file.account_id.is_some() {
            return Err(ConfigError::Invalid(
                "aws_kms: give aws_kms.listen (or --aws-kms-listen) to serve the AWS KMS API".into(),
            ));
        }
        return Ok(None);
    };
    let listen = socket_addr("aws_kms.listen", &listen, "127.0.0.1:8900")?;
    let region = file.region.unwrap_or_else(|| DEFAULT_REGION.into());
    let region_ok = (1..=32).contains(&region.len())
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-');
    if !region_ok {
        return Err(ConfigError::Invalid(format!(
            "aws_kms.region {region:?}: 1 to 32 lowercase letters, digits and inner hyphens, like keyward-1"
        )));
    }
    let account_id = file.account_id.unwrap_or_else(|| DEFAULT_ACCOUNT.into());
    if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError::Invalid(format!("aws_kms.account_id {account_id:?}: must be 12 digits")));
    }
    Ok(Some(AwsKmsConfig { listen, region, account_id }))
}

/// `[vault_transit]` and `--vault-listen`.
pub(super) fn vault_transit(
    flag: Option<String>,
    file: Option<FileVaultTransit>,
) -> Result<Option<VaultTransitConfig>, ConfigError> {
    let file = file.unwrap_or_default();
    let Some(listen) = flag.or(file.listen) else {
        if file.mount.is_some() {
            return Err(ConfigError::Invalid(
                "vault_transit: give vault_transit.listen (or --vault-listen) to serve the Vault Transit API"
                    .into(),
            ));
        }
        return Ok(None);
    };
    let listen = socket_addr("vault_transit.listen", &listen, "127.0.0.1:8200")?;
    let mount = file.mount.unwrap_or_else(|| "transit".into());
    let mount_ok = (1..=64).contains(&mount.len())
        && mount.split('/').all(|seg| {
            !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && !["sys", "auth"].contains(&mount.as_str());
    if !mount_ok {
        return Err(ConfigError::Invalid(format!(
            "vault_transit.mount {mount:?}: 1 to 64 characters of letters, digits, - and _ in /-separated segments, not sys or auth"
        )));
    }
    Ok(Some(VaultTransitConfig { listen, mount }))
}

/// Refuses an edge listening in plaintext off loopback (unless allowed), or
/// off loopback at all in development mode.
pub(super) fn check_listener(
    field: &str,
    addr: SocketAddr,
    tls: bool,
    allow_insecure: bool,
    dev: bool,
) -> Result<(), ConfigError> {
    if dev && !addr.ip().is_loopback() {
        return Err(ConfigError::Invalid(format!("{field}: --dev may only listen on loopback, not {addr}")));
    }
    if !tls && !allow_insecure && !addr.ip().is_loopback() {
        return Err(ConfigError::Invalid(format!(
            "{field}: {addr} is not a loopback address; configure [tls] or set allow_insecure = true"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws(
        listen: Option<&str>,
        region: Option<&str>,
        account: Option<&str>,
    ) -> Result<Option<AwsKmsConfig>, ConfigError> {
        let file = FileAwsKms {
            listen: listen.map(Into::into),
            region: region.map(Into::into),
            account_id: account.map(Into::into),
        };
        aws_kms(None, Some(file))
    }

    #[test]
    fn aws_defaults_and_refusals_name_the_field() {
        let a = aws(Some("127.0.0.1:8900"), None, None).unwrap().unwrap();
        assert_eq!((a.region.as_str(), a.account_id.as_str()), (DEFAULT_REGION, DEFAULT_ACCOUNT));
        assert!(aws(None, None, None).unwrap().is_none());
        let flag = aws_kms(Some("127.0.0.1:9".into()), None).unwrap().unwrap();
        assert_eq!(flag.listen.port(), 9);
        for (cfg, field) in [
            (aws(None, Some("eu-west-1"), None), "aws_kms.listen"),
            (aws(Some("nope"), None, None), "aws_kms.listen"),
            (aws(Some("127.0.0.1:1"), Some("EU_WEST"), None), "aws_kms.region"),
            (aws(Some("127.0.0.1:1"), Some("-x"), None), "aws_kms.region"),
            (aws(Some("127.0.0.1:1"), None, Some("12345")), "aws_kms.account_id"),
            (aws(Some("127.0.0.1:1"), None, Some("12345678901a")), "aws_kms.account_id"),
        ] {
            let e = cfg.unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }

    #[test]
    fn the_console_is_off_unless_asked_or_in_dev() {
        assert_eq!(console(None, None, None, false).unwrap(), None);
        let dev = console(None, None, None, true).unwrap().unwrap();
        assert_eq!(dev.listen.to_string(), DEV_CONSOLE_LISTEN);
        assert!(dev.dev_default);
        assert_eq!(dev.session_idle, std::time::Duration::from_secs(900));
        let c = console(Some("127.0.0.1:9000".into()), Some("127.0.0.1:1".into()), Some("30m"), true)
            .unwrap()
            .unwrap();
        assert_eq!((c.listen.port(), c.dev_default, c.session_idle.as_secs()), (9000, false, 1800));
        for (idle, listen) in [(Some("10s"), Some("127.0.0.1:1")), (Some("nope"), Some("127.0.0.1:1"))] {
            let e = console(listen.map(Into::into), None, idle, false).unwrap_err().to_string();
            assert!(e.contains("console_session_idle"), "{e}");
        }
        let e = console(None, None, Some("20m"), false).unwrap_err().to_string();
        assert!(e.contains("console_listen"), "{e}");
        let e = console(Some("nope".into()), None, None, false).unwrap_err().to_string();
        assert!(e.contains("console_listen"), "{e}");
    }

    #[test]
    fn vault_mounts_and_listeners_are_checked() {
        let v = |mount: &str| {
            vault_transit(
                Some("127.0.0.1:8200".into()),
                Some(FileVaultTransit { listen: None, mount: Some(mount.into()) }),
            )
        };
        assert_eq!(v("transit").unwrap().unwrap().mount, "transit");
        assert_eq!(v("team/transit").unwrap().unwrap().mount, "team/transit");
        for bad in ["", "sys", "auth", "a//b", "/x", "x y"] {
            assert!(v(bad).unwrap_err().to_string().contains("vault_transit.mount"), "{bad}");
        }
        let public: SocketAddr = "0.0.0.0:8200".parse().unwrap();
        let e = check_listener("vault_transit.listen", public, false, false, false).unwrap_err().to_string();
        assert!(e.contains("vault_transit.listen") && e.contains("[tls]"), "{e}");
        assert!(check_listener("x", public, true, false, false).is_ok());
        assert!(check_listener("x", public, false, true, false).is_ok());
        assert!(check_listener("x", public, true, false, true).is_err(), "--dev stays on loopback");
    }
}
