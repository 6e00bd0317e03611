//! Command-line arguments of a service process.
//!
//! master starts every service as `COMMAND -n NAME -t TYPE ARGS... -o name=value...`
//! (the master.cf args first, then each `-o` override). Postfix's master
//! passes the master.cf args verbatim too, and those may themselves hold
//! `-o` or `-v`, so options are recognised anywhere on the line rather
//! than only before the first plain word; `--` ends option processing.
//! Options this skeleton does not know stay in [`ParsedArgs::args`] for the
//! service itself.

use postern_config::ServiceType;

/// The skeleton's view of a service's argv (without argv\[0\]).
#[derive(Debug, Default)]
pub struct ParsedArgs {
    /// `-n NAME`: the master.cf service column (e.g. "submission").
    pub service_name: Option<String>,
    /// `-t TYPE`: the master.cf type column.
    pub service_type: Option<ServiceType>,
    /// Every `-o name=value`, in order (later ones win when applied).
    pub overrides: Vec<(String, String)>,
    /// `-v`: verbose logging (debug events are written).
    pub verbose: bool,
    /// Everything else, in order: the service's own arguments.
    pub args: Vec<String>,
}

/// Parses the master.cf `type` column / `-t` value.
///
/// Exists so that master and services agree on the spelling.
pub fn parse_service_type(s: &str) -> Option<ServiceType> {
    match s {
        "inet" => Some(ServiceType::Inet),
        "unix" => Some(ServiceType::Unix),
        "unix-dgram" => Some(ServiceType::UnixDgram),
        "fifo" => Some(ServiceType::Fifo),
        "pass" => Some(ServiceType::Pass),
        _ => None,
    }
}

/// The `-t` spelling of a service type (inverse of [`parse_service_type`]);
/// master uses it to build a child's argv.
pub fn service_type_name(t: &ServiceType) -> &'static str {
    match t {
        ServiceType::Inet => "inet",
        ServiceType::Unix => "unix",
        ServiceType::UnixDgram => "unix-dgram",
        ServiceType::Fifo => "fifo",
        ServiceType::Pass => "pass",
    }
}

/// Splits a service's argv into the skeleton's options and the rest.
///
/// Accepts `-n NAME` / `-nNAME`, `-t TYPE` / `-tTYPE`, `-o name=value` /
/// `-oname=value` and `-v`, anywhere. Errors name the bad option.
pub fn parse_service_args(args: &[String]) -> Result<ParsedArgs, String> {
    let mut parsed = ParsedArgs::default();
    let mut i = 0;
    let mut options_done = false;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if options_done {
            parsed.args.push(arg.clone());
            continue;
        }
        if arg == "--" {
            options_done = true;
            continue;
        }
        let (opt, attached) = match arg.as_str() {
            "-n" | "-t" | "-o" => (arg.as_str(), None),
            "-v" => {
                parsed.verbose = true;
                continue;
            }
            a if a.len() > 2
                && (a.starts_with("-n") || a.starts_with("-t") || a.starts_with("-o")) =>
            {
                (&a[..2], Some(a[2..].to_string()))
            }
            _ => {
                parsed.args.push(arg.clone());
                continue;
            }
        };
        let value = match attached {
            Some(v) => v,
            None => {
                let Some(v) = args.get(i) else {
                    return Err(format!("option {opt} requires a value"));
                };
                i += 1;
                v.clone()
            }
        };
        match opt {
            "-n" => {
                if value.is_empty() {
                    return Err("option -n: empty service name".to_string());
                }
                parsed.service_name = Some(value);
            }
            "-t" => {
                let t = parse_service_type(&value)
                    .ok_or_else(|| format!("option -t: unknown service type: {value}"))?;
                parsed.service_type = Some(t);
            }
            _ => {
                let Some((name, val)) = value.split_once('=') else {
                    return Err(format!(
                        "option -o: bad parameter override (need name=value): {value}"
                    ));
                };
                let name = name.trim();
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!("option -o: bad parameter name: {value}"));
                }
                parsed
                    .overrides
                    .push((name.to_string(), val.trim().to_string()));
            }
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn master_style_argv() {
        let p = parse_service_args(&v(&[
            "-n",
            "submission",
            "-t",
            "inet",
            "extra",
            "-o",
            "syslog_name=postern/submission",
            "-v",
        ]))
        .unwrap();
        assert_eq!(p.service_name.as_deref(), Some("submission"));
        assert!(matches!(p.service_type, Some(ServiceType::Inet)));
        assert_eq!(
            p.overrides,
            vec![("syslog_name".into(), "postern/submission".into())]
        );
        assert!(p.verbose);
        assert_eq!(p.args, v(&["extra"]));
    }

    #[test]
    fn attached_values_and_double_dash() {
        let p = parse_service_args(&v(&[
            "-nsmtp",
            "-tunix-dgram",
            "-omax_use=5",
            "--",
            "-o",
            "x",
        ]))
        .unwrap();
        assert_eq!(p.service_name.as_deref(), Some("smtp"));
        assert!(matches!(p.service_type, Some(ServiceType::UnixDgram)));
        assert_eq!(p.overrides, vec![("max_use".into(), "5".into())]);
        assert_eq!(p.args, v(&["-o", "x"]));
        assert!(!p.verbose);
    }

    #[test]
    fn empty_value_override_allowed_and_unknown_options_kept() {
        let p = parse_service_args(&v(&["-o", "content_filter=", "-x", "word"])).unwrap();
        assert_eq!(p.overrides, vec![("content_filter".into(), "".into())]);
        assert_eq!(p.args, v(&["-x", "word"]));
        assert!(p.service_name.is_none() && p.service_type.is_none());
    }

    #[test]
    fn malformed() {
        assert_eq!(
            parse_service_args(&v(&["-n"])).unwrap_err(),
            "option -n requires a value"
        );
        assert_eq!(
            parse_service_args(&v(&["-t", "tcp"])).unwrap_err(),
            "option -t: unknown service type: tcp"
        );
        assert_eq!(
            parse_service_args(&v(&["-o", "novalue"])).unwrap_err(),
            "option -o: bad parameter override (need name=value): novalue"
        );
        assert_eq!(
            parse_service_args(&v(&["-o", "=x"])).unwrap_err(),
            "option -o: bad parameter name: =x"
        );
        assert_eq!(
            parse_service_args(&v(&["-o", "a b=x"])).unwrap_err(),
            "option -o: bad parameter name: a b=x"
        );
        assert!(parse_service_args(&v(&["-n", ""])).is_err());
    }

    #[test]
    fn type_names_round_trip() {
        for name in ["inet", "unix", "unix-dgram", "fifo", "pass"] {
            assert_eq!(service_type_name(&parse_service_type(name).unwrap()), name);
        }
        assert!(parse_service_type("INET").is_none());
    }
}
