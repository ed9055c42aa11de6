//! Certificate expiry: each PEM certificate of `spec.keyRotation.certificates` parsed (with
//! x509-parser) into its subject and `notAfter`, and the `CertificateExpiring` condition:
//! True once any is within its `warnBeforeDays` of expiring (or expired), naming each with its
//! subject and date; Unknown when one cannot be read (and none expires), saying why. Pure:
//! the caller reads the PEM bytes and gives `now`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::admit::keys::Certificate;
use crate::api::keys::CertificateStatus;
use crate::api::{ConditionStatus, ConditionType, Reason, Verdict};

/// The first certificate of a PEM text: its subject and expiry. Err says what is wrong.
pub fn parse(pem: &[u8]) -> Result<CertificateStatus, String> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not a PEM certificate: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let not_after = cert.validity().not_after.timestamp();
    let not_after = DateTime::from_timestamp(not_after, 0)
        .ok_or_else(|| format!("notAfter {not_after} is out of range"))?;
    Ok(CertificateStatus {
        subject: cert.subject().to_string(),
        not_after,
    })
}

/// What status and the condition say of the certificates, each read or not.
pub fn report(
    read: &[(&Certificate, Result<CertificateStatus, String>)],
    now: DateTime<Utc>,
) -> (BTreeMap<String, CertificateStatus>, Verdict) {
    let mut statuses = BTreeMap::new();
    let mut expiring = Vec::new();
    let mut unreadable = Vec::new();
    for (cert, parsed) in read {
        match parsed {
            Ok(s) => {
                let warn =
                    chrono::Duration::from_std(cert.warn_before).unwrap_or(chrono::Duration::MAX);
                let from = s.not_after.checked_sub_signed(warn);
                if from.is_none_or(|from| now >= from) {
                    let verb = if now >= s.not_after {
                        "expired"
                    } else {
                        "expires"
                    };
                    expiring.push(format!(
                        "{} ({}) {verb} on {}",
                        cert.name,
                        s.subject,
                        s.not_after.format("%Y-%m-%d %H:%M UTC")
                    ));
                }
                statuses.insert(cert.name.clone(), s.clone());
            }
            Err(why) => unreadable.push(format!("{}: {why}", cert.name)),
        }
    }
    (statuses, verdict(&expiring, &unreadable))
}

fn verdict(expiring: &[String], unreadable: &[String]) -> Verdict {
    let t = ConditionType::CertificateExpiring;
    if !expiring.is_empty() {
        let mut message = format!("{}; renew and replace them", expiring.join("; "));
        if !unreadable.is_empty() {
            message.push_str(&format!(" (unreadable: {})", unreadable.join("; ")));
        }
        return Verdict::new(
            t,
            ConditionStatus::True,
            Reason::CertificateExpiresSoon,
            message,
        );
    }
    if !unreadable.is_empty() {
        return Verdict::new(
            t,
            ConditionStatus::Unknown,
            Reason::CertificateUnreadable,
            format!("{}; fix the path or Secret key", unreadable.join("; ")),
        );
    }
    Verdict::new(
        t,
        ConditionStatus::False,
        Reason::CertificatesValid,
        "no certificate expires within its warnBeforeDays",
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::admit::keys::CertificateSource;

    /// A self-signed certificate for `cn` valid until `not_after`, from rcgen.
    fn pem(cn: &str, not_after: DateTime<Utc>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec![cn.to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.not_after = rcgen::date_time_ymd(
            not_after.format("%Y").to_string().parse().unwrap(),
            not_after.format("%m").to_string().parse().unwrap(),
            not_after.format("%d").to_string().parse().unwrap(),
        );
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem().into_bytes()
    }

    fn cert(name: &str) -> Certificate {
        Certificate {
            name: name.into(),
            source: CertificateSource::File(format!("{name}.pem")),
            warn_before: Duration::from_secs(30 * 86_400),
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_pem_certificate_gives_its_subject_and_expiry() {
        let parsed = parse(&pem("shop.example", t("2027-03-01T00:00:00Z"))).unwrap();
        assert_eq!(parsed.subject, "CN=shop.example");
        assert_eq!(parsed.not_after, t("2027-03-01T00:00:00Z"));
        assert!(parse(b"not a certificate")
            .unwrap_err()
            .starts_with("not a PEM certificate"));
    }

    #[test]
    fn a_certificate_ten_days_from_expiry_is_expiring_with_subject_and_date() {
        let now = t("2026-12-05T12:00:00Z");
        let (web, api) = (cert("web"), cert("api"));
        let read = [
            (&web, parse(&pem("shop.example", t("2026-12-15T00:00:00Z")))),
            (&api, parse(&pem("api.example", t("2027-06-01T00:00:00Z")))),
        ];
        let (statuses, v) = report(&read, now);
        assert_eq!(v.status, ConditionStatus::True);
        assert_eq!(v.reason, Reason::CertificateExpiresSoon);
        assert_eq!(
            v.message,
            "web (CN=shop.example) expires on 2026-12-15 00:00 UTC; renew and replace them"
        );
        assert_eq!(statuses.len(), 2);
        let (_, v) = report(&read[1..], now);
        assert_eq!(v.status, ConditionStatus::False);
    }

    #[test]
    fn an_unreadable_certificate_makes_the_condition_unknown_saying_why() {
        let web = cert("web");
        let read = [(&web, Err("no such file web.pem".to_owned()))];
        let (statuses, v) = report(&read, t("2026-12-05T12:00:00Z"));
        assert!(statuses.is_empty());
        assert_eq!(v.status, ConditionStatus::Unknown);
        assert_eq!(
            v.message,
            "web: no such file web.pem; fix the path or Secret key"
        );
    }
}
