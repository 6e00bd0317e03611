//! The parts of a client session around the mail transaction: the stages
//! (for timeouts and for the "(in reply to ... command)" words of logs and
//! bounces), and the decisions after the greeting, EHLO/HELO/LHLO and
//! STARTTLS, made as Postfix's smtp(8) makes them.

use std::fmt;

use super::caps::Capabilities;
use super::reply::{ReplyParser, ServerReply};

/// Where the client is in the conversation: what it waits for, so the
/// driver picks the right timeout and the results name the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Waiting for the 220 greeting.
    Greeting,
    /// EHLO sent.
    Ehlo,
    /// HELO sent (after EHLO was refused).
    Helo,
    /// LHLO sent (LMTP).
    Lhlo,
    /// STARTTLS sent.
    StartTls,
    /// AUTH (or one of its responses) sent.
    Auth,
    /// MAIL FROM sent.
    Mail,
    /// RCPT TO sent.
    Rcpt,
    /// DATA sent, waiting for 354.
    Data,
    /// Sending the message content.
    DataContent,
    /// The final "." sent, waiting for the result.
    DataDone,
    /// A BDAT chunk (not the last) sent.
    Bdat,
    /// The BDAT LAST chunk sent, waiting for the result.
    BdatLast,
    /// RSET sent.
    Rset,
    /// QUIT sent.
    Quit,
}

impl Stage {
    /// The main.cf parameter that bounds this stage, with Postfix's names
    /// (AUTH has none of its own in Postfix: the EHLO one is in force).
    pub fn timeout_parameter(self) -> &'static str {
        match self {
            Stage::Greeting | Stage::Ehlo | Stage::Helo | Stage::Lhlo | Stage::Auth => {
                "smtp_helo_timeout"
            }
            Stage::StartTls => "smtp_starttls_timeout",
            Stage::Mail => "smtp_mail_timeout",
            Stage::Rcpt => "smtp_rcpt_timeout",
            Stage::Data => "smtp_data_init_timeout",
            Stage::DataContent | Stage::Bdat => "smtp_data_xfer_timeout",
            Stage::DataDone | Stage::BdatLast => "smtp_data_done_timeout",
            Stage::Rset => "smtp_rset_timeout",
            Stage::Quit => "smtp_quit_timeout",
        }
    }

    /// The LMTP client's name for the same parameter (`lmtp_mail_timeout`...).
    pub fn lmtp_timeout_parameter(self) -> String {
        self.timeout_parameter().replacen("smtp_", "lmtp_", 1)
    }

    /// Postfix's words after a server reply in logs and bounces, e.g.
    /// `"(in reply to RCPT TO command)"`.
    pub fn in_reply_to(self) -> &'static str {
        match self {
            Stage::Greeting => "(in reply to initial greeting)",
            Stage::Ehlo => "(in reply to EHLO command)",
            Stage::Helo => "(in reply to HELO command)",
            Stage::Lhlo => "(in reply to LHLO command)",
            Stage::StartTls => "(in reply to STARTTLS command)",
            Stage::Auth => "(in reply to AUTH command)",
            Stage::Mail => "(in reply to MAIL FROM command)",
            Stage::Rcpt => "(in reply to RCPT TO command)",
            Stage::Data => "(in reply to DATA command)",
            Stage::DataContent | Stage::DataDone => "(in reply to end of DATA command)",
            Stage::Bdat => "(in reply to BDAT command)",
            Stage::BdatLast => "(in reply to BDAT LAST command)",
            Stage::Rset => "(in reply to RSET command)",
            Stage::Quit => "(in reply to QUIT command)",
        }
    }

    /// Postfix's words for what the client was doing when the connection
    /// broke or timed out ("lost connection with X while ...").
    pub fn while_doing(self) -> &'static str {
        match self {
            Stage::Greeting => "receiving the initial server greeting",
            Stage::Ehlo | Stage::Helo | Stage::Lhlo => "performing the HELO handshake",
            Stage::StartTls => "performing the STARTTLS handshake",
            Stage::Auth => "performing the AUTH handshake",
            Stage::Mail => "sending MAIL FROM",
            Stage::Rcpt => "sending RCPT TO",
            Stage::Data => "sending DATA command",
            Stage::DataContent | Stage::Bdat => "sending message body",
            Stage::DataDone | Stage::BdatLast => {
                "sending end of data -- message may be sent more than once"
            }
            Stage::Rset => "sending RSET",
            Stage::Quit => "sending QUIT",
        }
    }
}

impl fmt::Display for Stage {
    /// The command's name as in [`Stage::in_reply_to`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.in_reply_to())
    }
}

/// What to do after the server's greeting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GreetingVerdict {
    /// 220: send EHLO (or LHLO).
    Proceed,
    /// 4xx, 5xx or an unexpected 2xx: "host X refused to talk to me: ..."
    /// Close (QUIT) and try the next host. `permanent` is a 5xx: Postfix,
    /// with smtp_skip_5xx_greeting = yes (the default), also just tries the
    /// next host; with "no" it bounces the message when this is the last.
    Refused {
        /// The greeting.
        reply: ServerReply,
        /// True for 5xx.
        permanent: bool,
    },
}

/// Checks the greeting: only 220 lets the session continue.
pub fn greeting_verdict(reply: &ServerReply) -> GreetingVerdict {
    if reply.code == 220 {
        GreetingVerdict::Proceed
    } else {
        GreetingVerdict::Refused {
            reply: reply.clone(),
            permanent: reply.is_permanent(),
        }
    }
}

/// What to do after the reply to EHLO, HELO or LHLO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeloVerdict {
    /// 2xx: the session may go on with these capabilities (none after HELO).
    Proceed(Capabilities),
    /// EHLO was refused (not 421): send HELO and go on without extensions.
    FallBackToHelo,
    /// 421 at any time, or HELO/LHLO refused: "host X refused to talk to
    /// me"; QUIT and try the next host. `permanent` is a 5xx (Postfix bounces
    /// when no host is left, and defers on a 4xx).
    TryNextHost {
        /// The refusal.
        reply: ServerReply,
        /// True for 5xx.
        permanent: bool,
    },
}

/// Decides after the reply to `sent` (Stage::Ehlo, Stage::Helo or
/// Stage::Lhlo): EHLO refused with anything but 421 falls back to HELO (as
/// Postfix does); LHLO has no fallback (RFC 2033).
pub fn helo_verdict(sent: Stage, reply: &ServerReply) -> HeloVerdict {
    if reply.is_success() {
        return HeloVerdict::Proceed(match sent {
            Stage::Helo => Capabilities::default(),
            _ => Capabilities::from_ehlo(reply),
        });
    }
    if sent == Stage::Ehlo && reply.code != 421 {
        return HeloVerdict::FallBackToHelo;
    }
    HeloVerdict::TryNextHost {
        reply: reply.clone(),
        permanent: reply.is_permanent(),
    }
}

/// What to do after the reply to STARTTLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartTlsVerdict {
    /// 220 and nothing behind it: start the TLS handshake, then clear the
    /// parser and send EHLO again (RFC 3207: all earlier knowledge is void).
    Handshake,
    /// The server sent bytes after its 220, before the handshake: they
    /// could be injected by an attacker to be read as if protected by TLS.
    /// Close the connection and try the next host.
    InjectedData,
    /// Refused: per policy, go on in plaintext (opportunistic TLS: Postfix
    /// logs and continues, or tries the next host when TLS is mandatory);
    /// 421 always means try the next host.
    Refused(ServerReply),
}

/// Decides after the reply to STARTTLS; `parser` is the reply parser after
/// the reply was taken from it, to find bytes the server pipelined behind it.
pub fn starttls_verdict(reply: &ServerReply, parser: &ReplyParser) -> StartTlsVerdict {
    if reply.code != 220 {
        StartTlsVerdict::Refused(reply.clone())
    } else if parser.has_pending() {
        StartTlsVerdict::InjectedData
    } else {
        StartTlsVerdict::Handshake
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_and_words() {
        assert_eq!(Stage::Greeting.timeout_parameter(), "smtp_helo_timeout");
        assert_eq!(Stage::Ehlo.timeout_parameter(), "smtp_helo_timeout");
        assert_eq!(Stage::Mail.timeout_parameter(), "smtp_mail_timeout");
        assert_eq!(Stage::Rcpt.timeout_parameter(), "smtp_rcpt_timeout");
        assert_eq!(Stage::Data.timeout_parameter(), "smtp_data_init_timeout");
        assert_eq!(
            Stage::DataContent.timeout_parameter(),
            "smtp_data_xfer_timeout"
        );
        assert_eq!(
            Stage::DataDone.timeout_parameter(),
            "smtp_data_done_timeout"
        );
        assert_eq!(
            Stage::BdatLast.timeout_parameter(),
            "smtp_data_done_timeout"
        );
        assert_eq!(Stage::Quit.timeout_parameter(), "smtp_quit_timeout");
        assert_eq!(Stage::Rcpt.lmtp_timeout_parameter(), "lmtp_rcpt_timeout");
        assert_eq!(Stage::Mail.in_reply_to(), "(in reply to MAIL FROM command)");
        assert_eq!(Stage::Rcpt.in_reply_to(), "(in reply to RCPT TO command)");
        assert_eq!(Stage::Data.in_reply_to(), "(in reply to DATA command)");
        assert_eq!(
            Stage::DataDone.in_reply_to(),
            "(in reply to end of DATA command)"
        );
        assert_eq!(Stage::Rcpt.while_doing(), "sending RCPT TO");
    }

    #[test]
    fn greeting() {
        assert_eq!(
            greeting_verdict(&ServerReply::new(220, &["mx ESMTP"])),
            GreetingVerdict::Proceed
        );
        for (code, permanent) in [(421, false), (450, false), (554, true), (250, false)] {
            let r = ServerReply::new(code, &["go away"]);
            assert_eq!(
                greeting_verdict(&r),
                GreetingVerdict::Refused {
                    reply: r.clone(),
                    permanent
                }
            );
        }
    }

    #[test]
    fn ehlo_then_helo() {
        let ok = ServerReply::new(250, &["mx", "PIPELINING"]);
        match helo_verdict(Stage::Ehlo, &ok) {
            HeloVerdict::Proceed(c) => assert!(c.pipelining),
            v => panic!("{v:?}"),
        }
        assert_eq!(
            helo_verdict(Stage::Helo, &ok),
            HeloVerdict::Proceed(Capabilities::default())
        );
        for code in [500, 502, 550, 451] {
            let r = ServerReply::new(code, &["no"]);
            assert_eq!(helo_verdict(Stage::Ehlo, &r), HeloVerdict::FallBackToHelo);
        }
        let r421 = ServerReply::new(421, &["4.3.2 bye"]);
        assert!(matches!(
            helo_verdict(Stage::Ehlo, &r421),
            HeloVerdict::TryNextHost {
                permanent: false,
                ..
            }
        ));
        let r = ServerReply::new(550, &["no"]);
        assert!(matches!(
            helo_verdict(Stage::Helo, &r),
            HeloVerdict::TryNextHost {
                permanent: true,
                ..
            }
        ));
        assert!(matches!(
            helo_verdict(Stage::Lhlo, &r),
            HeloVerdict::TryNextHost { .. }
        ));
    }

    #[test]
    fn starttls() {
        let mut p = ReplyParser::new();
        p.push(b"220 2.0.0 go ahead\r\n");
        let r = p.next_reply().unwrap().unwrap();
        assert_eq!(starttls_verdict(&r, &p), StartTlsVerdict::Handshake);
        p.push(b"220 2.0.0 go ahead\r\n250 injected\r\n");
        let r = p.next_reply().unwrap().unwrap();
        assert_eq!(starttls_verdict(&r, &p), StartTlsVerdict::InjectedData);
        let no = ServerReply::new(454, &["4.7.0 TLS not available"]);
        assert_eq!(
            starttls_verdict(&no, &p),
            StartTlsVerdict::Refused(no.clone())
        );
    }
}
