//! `sendmail`, `mailq` and `newaliases`: the local submission commands.
//!
//! The `postern` binary answers to these names (argv\[0\], usually through
//! symlinks) and to `postern sendmail ...`. `sendmail` reads a message the
//! way Sendmail and Postfix do (options below), then runs
//! `$daemon_directory/postdrop` with the message on its standard input as
//! postern-ipc frames; postdrop (set-group-ID postdrop) writes it into
//! `maildrop/` and pickup passes it to cleanup. sendmail's exit status is
//! postdrop's (sysexits: 0, 65 bad input, 75 try later, 77 not allowed),
//! or 64 (`EX_USAGE`) for a bad command line and 78 for a broken main.cf.
//!
//! Options: `-t` (recipients from To/Cc/Bcc, added to any on the command
//! line), `-f SENDER` / `-r SENDER`, `-F NAME` (adds
//! `From: NAME <sender>` when the message has no From:), `-i` / `-oi`
//! (a line with a lone `.` does not end the input), `-bm` (default),
//! `-bs` (an SMTP conversation on stdin/stdout, played by smtpd's own
//! session from postern-smtp-proto, read one line at a time), `-bp` (= mailq), `-bi` /
//! `-I` (= newaliases), `-C DIR` (configuration directory); accepted and
//! ignored as Postfix does: `-oX` (any other -o), `-v`, `-N DSN`, `-R RET`,
//! `-V ENVID`, `-B TYPE`, `-h N`, `-L LABEL`, `-O OPT`, `-X FILE`, `-e X`,
//! `-p PROTO`, `-G`, `-U`, `-c`, `-m`, `-n`, `-x`. Bcc: header fields are
//! always removed. Input lines end with LF (a CR before it is dropped).
//!
//! `mailq` reads the queue directories directly and prints them in
//! Postfix's format, with each deferred recipient's reason from qmgr's
//! defer log (the reader is `postern queue list`'s, src/queue.rs); it works
//! for root and the mail system's own users.
//! Others get "permission denied: run mailq as root" (77): a showq service
//! that answers over `public/` is future work. `newaliases` parses every
//! hash-like map in alias_maps and reports each file's alias count or the
//! first error with file:line (Postern reads aliases as text: there is no
//! database to rebuild, so this is a check).
//!
//! SECURITY: runs as the invoking user with no privileges of its own; all
//! trust decisions are postdrop's. It starts postdrop with an empty
//! environment (only MAIL_CONFIG when a configuration directory was
//! chosen), so nothing of the caller's environment reaches a set-ID program
//! by accident.
//!
//! PARAMETERS: daemon_directory, queue_directory, myorigin, myhostname,
//! mail_name, message_size_limit, alias_maps, config_directory.

use postern_config::MainCf;
use postern_ipc::Message;
use postern_ipc::messages::{SubmitContent, SubmitRequest, SubmitSender};
use postern_queue::QueueDirs;
use postern_smtp_proto::server::{self, End, RcptTo, Session};
use postern_smtp_proto::{Reply, ReversePath};
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command as Process, Stdio};

/// The sysexits statuses sendmail exits with, from the one table
/// (postern-status): `EX_USAGE` bad command line, `EX_DATAERR` bad input,
/// `EX_TEMPFAIL` try again later, `EX_NOPERM` not allowed, `EX_CONFIG`
/// broken configuration.
pub use postern_status::sysexits::{EX_CONFIG, EX_DATAERR, EX_NOPERM, EX_TEMPFAIL, EX_USAGE};

/// The names under which the `postern` binary acts as this module.
pub const NAMES: &[&str] = &["sendmail", "mailq", "newaliases"];

/// Size of the content pieces sent to postdrop.
const CHUNK: usize = 64 * 1024;

/// Hands one message (envelope, LF content) to postdrop: Ok = the queue
/// ID, Err = (exit status, message). A parameter so `-bs` can be tested
/// without a postdrop.
pub type SubmitFn<'a> = dyn FnMut(SubmitRequest, &[u8]) -> Result<String, (i32, String)> + 'a;

/// What the command was asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Read one message from stdin and submit it (`-bm`, the default).
    Deliver,
    /// Speak SMTP on stdin/stdout (`-bs`).
    Smtp,
    /// List the queue (`-bp`, `mailq`).
    Mailq,
    /// Check the alias files (`-bi`, `-I`, `newaliases`).
    Newaliases,
    /// Retry all deferred mail now (`-q`, as `postern queue flush`).
    Flush,
}

/// The parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// What to do.
    pub mode: Mode,
    /// `-t`: take recipients from To/Cc/Bcc.
    pub extract: bool,
    /// `-f`/`-r`: the envelope sender as given.
    pub sender: Option<String>,
    /// `-F`: the full name for a From: field.
    pub full_name: Option<String>,
    /// `-i`/`-oi`: a lone "." line is ordinary content.
    pub ignore_dots: bool,
    /// `-C`: the configuration directory.
    pub config_dir: Option<PathBuf>,
    /// Recipients from the command line.
    pub recipients: Vec<String>,
}

/// Letters of options that take an argument (getopt "x:").
const WITH_ARG: &str = "BCFLNORVXbefhoprq";
/// Flag letters accepted and ignored.
const IGNORED_FLAGS: &str = "GUcmnvx";

/// Parses sendmail's command line (without argv\[0\]) getopt-style: options
/// may be grouped (`-ti`) and arguments attached (`-fuser`) or separate;
/// options end at the first non-option or `--`. Err is the usage message.
pub fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        mode: Mode::Deliver,
        extract: false,
        sender: None,
        full_name: None,
        ignore_dots: false,
        config_dir: None,
        recipients: Vec::new(),
    };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        if !a.starts_with('-') || a.len() == 1 {
            break;
        }
        let letters: Vec<char> = a[1..].chars().collect();
        let mut j = 0;
        while j < letters.len() {
            let c = letters[j];
            if c == 'q' {
                // -q: flush the queue (Postfix runs postqueue -f); -qINTERVAL
                // (a daemon's queue run interval) is accepted and ignored.
                if j + 1 == letters.len() {
                    o.mode = Mode::Flush;
                }
                break;
            }
            if WITH_ARG.contains(c) {
                let attached: String = letters[j + 1..].iter().collect();
                let value = if !attached.is_empty() {
                    attached
                } else {
                    i += 1;
                    args.get(i)
                        .cloned()
                        .ok_or_else(|| format!("option requires an argument -- '{c}'"))?
                };
                apply_with_arg(&mut o, c, &value)?;
                break;
            }
            match c {
                't' => o.extract = true,
                'i' => o.ignore_dots = true,
                'I' => o.mode = Mode::Newaliases,
                c if IGNORED_FLAGS.contains(c) => {}
                c => return Err(format!("invalid option -- '{c}'")),
            }
            j += 1;
        }
        i += 1;
    }
    o.recipients = args[i.min(args.len())..].to_vec();
    Ok(o)
}

fn apply_with_arg(o: &mut Options, c: char, value: &str) -> Result<(), String> {
    match c {
        'b' => {
            o.mode = match value {
                "m" => Mode::Deliver,
                "s" => Mode::Smtp,
                "p" => Mode::Mailq,
                "i" => Mode::Newaliases,
                "d" | "D" => {
                    return Err("-bd: the mail system is started with `postern start`".into());
                }
                other => return Err(format!("-b{other}: unsupported mode")),
            }
        }
        'f' | 'r' => o.sender = Some(value.to_string()),
        'F' => o.full_name = Some(value.to_string()),
        'C' => {
            let p = PathBuf::from(value);
            // Postfix's -C takes main.cf or its directory.
            o.config_dir = Some(if p.file_name().is_some_and(|n| n == "main.cf") {
                p.parent().map(Path::to_path_buf).unwrap_or(p)
            } else {
                p
            });
        }
        'o' if value == "i" => o.ignore_dots = true,
        // -B -L -N -O -R -V -X -e -h -p: accepted and ignored, as Postfix does.
        _ => {}
    }
    Ok(())
}

/// The usage text printed with a usage error.
pub const USAGE: &str = "usage: sendmail [-t] [-i] [-f sender] [-F full name] [-bm|-bs|-bp|-bi|-q] [-C dir] [recipient ...]";

/// Entry point for the `postern` binary: if it was called as sendmail,
/// mailq or newaliases (argv\[0\]), or as `postern [-c DIR] sendmail|mailq|newaliases ...`,
/// runs that and returns the exit status; otherwise None.
pub fn dispatch(argv0: &str, args: &[String]) -> Option<i32> {
    let base = Path::new(argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if NAMES.contains(&base.as_str()) {
        return Some(main(&base, args, None));
    }
    match args {
        [c, dir, name, rest @ ..] if c == "-c" && NAMES.contains(&name.as_str()) => {
            Some(main(name, rest, Some(PathBuf::from(dir))))
        }
        [name, rest @ ..] if NAMES.contains(&name.as_str()) => Some(main(name, rest, None)),
        _ => None,
    }
}

/// Runs `name` (sendmail, mailq or newaliases) with `args`; returns the
/// exit status. `config_dir` comes from `postern -c`.
pub fn main(name: &str, args: &[String], config_dir: Option<PathBuf>) -> i32 {
    let mut opts = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{name}: {e}\n{USAGE}");
            return EX_USAGE;
        }
    };
    match name {
        "mailq" => opts.mode = Mode::Mailq,
        "newaliases" => opts.mode = Mode::Newaliases,
        _ => {}
    }
    let explicit = opts
        .config_dir
        .clone()
        .or(config_dir)
        .or_else(|| std::env::var_os("MAIL_CONFIG").map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty());
    let dir = explicit
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/postern"));
    let main_cf = match MainCf::load(&dir) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{name}: fatal: {e}");
            return EX_CONFIG;
        }
    };
    let ctx = Context {
        postdrop: main_cf.path("daemon_directory").join("postdrop"),
        config_env: explicit,
        myorigin: main_cf.str("myorigin"),
        myhostname: main_cf.str("myhostname"),
        mail_name: main_cf.str("mail_name"),
        size_limit: main_cf.size("message_size_limit").unwrap_or(0),
        login: login_name(),
    };
    match opts.mode {
        Mode::Mailq => {
            let dirs = QueueDirs::new(main_cf.path("queue_directory"));
            let mut out = io::stdout().lock();
            match mailq(&dirs, &mut out) {
                Ok(()) => 0,
                Err((status, msg)) => {
                    eprintln!("postern: {msg}");
                    status
                }
            }
        }
        Mode::Newaliases => {
            newaliases(&main_cf, &mut io::stdout().lock(), &mut io::stderr().lock())
        }
        Mode::Flush => match crate::queue::flush(main_cf.config_dir()) {
            Ok(()) => 0,
            Err(f) => {
                eprintln!("{}", f.message);
                EX_TEMPFAIL
            }
        },
        Mode::Smtp => {
            let mut submit = |req: SubmitRequest, content: &[u8]| {
                let mut p = Postdrop::start(&ctx)?;
                let _ = p.send(&req).and_then(|()| {
                    for c in content.chunks(CHUNK) {
                        p.send(&SubmitContent::Chunk { data: c.to_vec() })?;
                    }
                    p.send(&SubmitContent::End)
                });
                p.finish()
            };
            smtp_session(
                &ctx,
                &mut io::stdin().lock(),
                &mut io::stdout().lock(),
                &mut submit,
            )
        }
        Mode::Deliver => match deliver(&ctx, &opts, &mut io::stdin().lock()) {
            Ok(_) => 0,
            Err((status, msg)) => {
                if !msg.is_empty() {
                    eprintln!("sendmail: {msg}");
                }
                status
            }
        },
    }
}

/// What submission needs to know, from main.cf and the caller.
#[derive(Clone, Debug)]
pub struct Context {
    /// The postdrop program.
    pub postdrop: PathBuf,
    /// MAIL_CONFIG for postdrop, when a directory was chosen.
    pub config_env: Option<PathBuf>,
    /// myorigin, for From: with -F.
    pub myorigin: String,
    /// myhostname, for the -bs greeting.
    pub myhostname: String,
    /// mail_name, for the -bs greeting.
    pub mail_name: String,
    /// message_size_limit (0 = none).
    pub size_limit: u64,
    /// The caller's login name.
    pub login: String,
}

fn login_name() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// A running postdrop with the pipe to its standard input.
struct Postdrop {
    child: Child,
    stdin: Option<BufWriter<ChildStdin>>,
}

impl Postdrop {
    fn start(ctx: &Context) -> Result<Postdrop, (i32, String)> {
        let mut cmd = Process::new(&ctx.postdrop);
        cmd.env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(d) = &ctx.config_env {
            cmd.env("MAIL_CONFIG", d);
        }
        let mut child = cmd.spawn().map_err(|e| {
            (
                EX_TEMPFAIL,
                format!("fatal: cannot run {}: {e}", ctx.postdrop.display()),
            )
        })?;
        let stdin = child.stdin.take().map(BufWriter::new);
        Ok(Postdrop { child, stdin })
    }

    fn send<M: Message>(&mut self, m: &M) -> io::Result<()> {
        match self.stdin.as_mut() {
            Some(w) => w.write_all(&m.encode()),
            None => Err(io::Error::other("postdrop input closed")),
        }
    }

    /// Closes the input, waits, and returns the queue ID postdrop printed
    /// or its exit status (its own message is already on stderr).
    fn finish(mut self) -> Result<String, (i32, String)> {
        if let Some(mut w) = self.stdin.take() {
            let _ = w.flush();
        }
        let mut id = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut id);
        }
        match self.child.wait() {
            Ok(st) if st.success() => Ok(id.trim().to_string()),
            Ok(st) => Err((st.code().unwrap_or(EX_TEMPFAIL), String::new())),
            Err(e) => Err((EX_TEMPFAIL, format!("fatal: waiting for postdrop: {e}"))),
        }
    }
}

/// Recipient addresses in an address-list header value (To, Cc, Bcc):
/// `Name <a@b>`, `a@b (comment)`, `"Quoted, Name" <c@d>`, groups
/// `team: x@y, z@w;`. Returns the addresses in order, without brackets.
pub fn header_addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut angle: Option<String> = None;
    let (mut in_quotes, mut in_angle, mut escaped) = (false, false, false);
    let mut depth = 0u32;
    fn flush(out: &mut Vec<String>, cur: &mut String, angle: &mut Option<String>) {
        let raw = angle.take().unwrap_or_else(|| cur.clone());
        cur.clear();
        let mut a = raw.trim();
        // A source route "@a,@b:user@c" keeps only the mailbox.
        if a.starts_with('@')
            && let Some((_, rest)) = a.split_once(':')
        {
            a = rest.trim();
        }
        if !a.is_empty() {
            out.push(a.to_string());
        }
    }
    for c in value.chars() {
        let target = if in_angle {
            angle.get_or_insert_with(String::new)
        } else {
            &mut cur
        };
        if escaped {
            target.push(c);
            escaped = false;
            continue;
        }
        if in_quotes {
            target.push(c);
            match c {
                '\\' => escaped = true,
                '"' => in_quotes = false,
                _ => {}
            }
            continue;
        }
        if depth > 0 {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                '\\' => escaped = true,
                _ => {}
            }
            if escaped {
                // An escaped character inside a comment is dropped with it.
                escaped = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_quotes = true;
                target.push(c);
            }
            '(' => depth = 1,
            '<' if !in_angle => {
                in_angle = true;
                angle = Some(String::new());
            }
            '>' if in_angle => in_angle = false,
            ',' | ';' if !in_angle => flush(&mut out, &mut cur, &mut angle),
            // A group's display name ends with ':'.
            ':' if !in_angle => cur.clear(),
            _ => target.push(c),
        }
    }
    flush(&mut out, &mut cur, &mut angle);
    out
}

/// The header of a message read by sendmail: fields (raw text, LF
/// endings, continuation lines included) in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// (field name, whole raw field text including its line ends).
    pub fields: Vec<(String, String)>,
}

impl Header {
    /// True if a field with this name (case-insensitive) is present.
    pub fn has(&self, name: &str) -> bool {
        self.fields
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// Unfolded values of every field called `name`.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(n, raw)| raw[n.len() + 1..].replace(['\r', '\n'], ""))
            .collect()
    }
}

fn field_name(line: &[u8]) -> Option<String> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let ok = !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b));
    ok.then(|| String::from_utf8_lossy(name).into_owned())
}

/// Reads input lines: LF ends a line, a CR before it is dropped, a final
/// line without LF gets one. None at the end of input or, unless
/// `ignore_dots`, at a line with a lone ".".
fn next_line(input: &mut impl BufRead, ignore_dots: bool) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    if input.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if !ignore_dots && line == b"." {
        return Ok(None);
    }
    line.push(b'\n');
    Ok(Some(line))
}

/// Formats `From: NAME <addr>`, quoting the name when it holds specials.
pub fn from_field(full_name: &str, address: &str) -> String {
    let name: String = full_name
        .chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .collect();
    let special = name.chars().any(|c| "()<>[]:;@\\,.\"".contains(c));
    if special {
        let q = name.replace('\\', "\\\\").replace('"', "\\\"");
        format!("From: \"{q}\" <{address}>\n")
    } else {
        format!("From: {name} <{address}>\n")
    }
}

/// The envelope sender sendmail passes to postdrop for `-f`: none means
/// the user's own address; `<>` or an empty -f is the null sender.
pub fn envelope_sender(f: Option<&str>) -> SubmitSender {
    match f.map(str::trim) {
        None => SubmitSender::Caller,
        Some("") | Some("<>") => SubmitSender::Null,
        Some(s) => SubmitSender::Given(
            s.strip_prefix('<')
                .and_then(|s| s.strip_suffix('>'))
                .unwrap_or(s)
                .to_string(),
        ),
    }
}

/// `sendmail` without -bs: reads the message from `input`, collects the
/// recipients, removes Bcc:, adds From: for -F, and streams it to
/// postdrop. Ok = the maildrop queue ID.
pub fn deliver(
    ctx: &Context,
    opts: &Options,
    input: &mut impl BufRead,
) -> Result<String, (i32, String)> {
    if !opts.extract && opts.recipients.is_empty() {
        return Err((
            EX_USAGE,
            "fatal: Recipient addresses must be specified on the command line or via the -t option"
                .into(),
        ));
    }
    let read_err = |e: io::Error| (EX_TEMPFAIL, format!("fatal: reading the message: {e}"));
    // The header: until an empty line or a line that is not a field.
    let mut header = Header::default();
    let mut first_body_line: Option<Vec<u8>> = None;
    let mut ended = false;
    loop {
        let Some(line) = next_line(input, opts.ignore_dots).map_err(read_err)? else {
            ended = true;
            break;
        };
        let continues = matches!(line.first(), Some(b' ' | b'\t')) && !header.fields.is_empty();
        if continues {
            if let Some((_, raw)) = header.fields.last_mut() {
                raw.push_str(&String::from_utf8_lossy(&line));
            }
            continue;
        }
        match field_name(&line) {
            Some(name) if line != b"\n" => {
                header
                    .fields
                    .push((name, String::from_utf8_lossy(&line).into_owned()));
            }
            _ => {
                first_body_line = Some(line);
                break;
            }
        }
    }
    let mut recipients = opts.recipients.clone();
    if opts.extract {
        for name in ["To", "Cc", "Bcc"] {
            for v in header.values(name) {
                recipients.extend(header_addresses(&v));
            }
        }
        if recipients.is_empty() {
            return Err((
                EX_DATAERR,
                "fatal: No recipient addresses found in message header".into(),
            ));
        }
    }
    let sender = envelope_sender(opts.sender.as_deref());
    let mut head = String::new();
    for (name, raw) in &header.fields {
        if !name.eq_ignore_ascii_case("bcc") {
            head.push_str(raw);
        }
    }
    if let Some(full) = &opts.full_name
        && !header.has("from")
    {
        let addr = match &sender {
            SubmitSender::Caller => format!("{}@{}", ctx.login, ctx.myorigin),
            SubmitSender::Null => format!("MAILER-DAEMON@{}", ctx.myorigin),
            SubmitSender::Given(s) if s.contains('@') => s.to_string(),
            SubmitSender::Given(s) => format!("{s}@{}", ctx.myorigin),
        };
        head.push_str(&from_field(full, &addr));
    }
    let req = SubmitRequest {
        sender,
        recipients,
        attributes: Vec::new(),
    };
    let mut p = Postdrop::start(ctx)?;
    let sent = (|| -> io::Result<()> {
        p.send(&req)?;
        let mut chunk = head.into_bytes();
        if let Some(l) = first_body_line {
            chunk.extend_from_slice(&l);
        }
        if !ended {
            while let Some(line) = next_line(input, opts.ignore_dots)? {
                chunk.extend_from_slice(&line);
                if chunk.len() >= CHUNK {
                    p.send(&SubmitContent::Chunk {
                        data: std::mem::take(&mut chunk),
                    })?;
                }
            }
        }
        if !chunk.is_empty() {
            p.send(&SubmitContent::Chunk { data: chunk })?;
        }
        p.send(&SubmitContent::End)
    })();
    match (sent, p.finish()) {
        (_, Err(e)) => Err(e),
        (Ok(()), Ok(id)) => Ok(id),
        (Err(e), Ok(_)) => Err((EX_TEMPFAIL, format!("fatal: {e}"))),
    }
}

/// Converts bare LF to CRLF (`prev_cr` carries a CR across reads), so a
/// `-bs` conversation typed or piped with plain newlines works; the SMTP
/// code then sees the proper line ends it requires (a BDAT size counts
/// the octets after this conversion).
fn crlf(input: &[u8], prev_cr: &mut bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + 16);
    for &b in input {
        if b == b'\n' && !*prev_cr {
            out.push(b'\r');
        }
        out.push(b);
        *prev_cr = b == b'\r';
    }
    out
}

/// `sendmail -bs`: an SMTP conversation on `input`/`output` whose
/// messages go to `submit` (postdrop in real use), played by the same
/// session as smtpd's ([`postern_smtp_proto::server`]). Bare LF input is
/// read as CRLF. Returns the exit status (0 after QUIT or end of input,
/// 75 when reading or writing failed).
pub fn smtp_session(
    ctx: &Context,
    input: &mut impl Read,
    output: &mut impl Write,
    submit: &mut SubmitFn<'_>,
) -> i32 {
    let mut d = BsDriver {
        input,
        output,
        raw: Vec::new(),
        ready: Vec::new(),
        prev_cr: false,
        eof: false,
        failed: None,
        submit,
        content: Vec::new(),
    };
    let mut session = Session::new(session_config(ctx));
    let _ = server::block_on(session.run(&mut d));
    match d.failed {
        None => 0,
        Some(e) => {
            eprintln!("sendmail: {e}");
            EX_TEMPFAIL
        }
    }
}

/// The session's settings for `-bs`: smtpd's protocol without TLS, AUTH
/// or error limits (the local user is the one typing), and the size limit
/// of main.cf.
fn session_config(ctx: &Context) -> server::Config {
    // The local user's own stdin: no error, junk or recipient limits;
    // smtpd's defaults otherwise (no TLS, no AUTH, VRFY off).
    server::Config {
        hostname: ctx.myhostname.clone(),
        greeting: format!("{} ESMTP {}", ctx.myhostname, ctx.mail_name),
        message_size_limit: ctx.size_limit,
        recipient_limit: usize::MAX,
        hard_error_limit: u32::MAX,
        soft_error_limit: u32::MAX,
        error_sleep: std::time::Duration::ZERO,
        junk_limit: u32::MAX,
        content_chunk: CHUNK,
        postmaster_domain: ctx.myorigin.clone(),
        // A submission to postdrop carries no DSN parameters.
        dsn: false,
        ..server::Config::default()
    }
}

/// The `-bs` driver: stdin/stdout and postdrop.
struct BsDriver<'a, 'b, R: Read, W: Write> {
    input: &'a mut R,
    output: &'a mut W,
    /// Input read but not yet handed to the session.
    raw: Vec<u8>,
    /// Converted (CRLF) input of the current line, for the session.
    ready: Vec<u8>,
    prev_cr: bool,
    eof: bool,
    /// Why reading or writing failed.
    failed: Option<io::Error>,
    submit: &'a mut SubmitFn<'b>,
    /// The message so far.
    content: Vec<u8>,
}

impl<R: Read, W: Write> BsDriver<'_, '_, R, W> {
    /// Makes the next input line ready. One line at a time: on a pipe,
    /// what a client wrote ahead cannot be told from what it waited to
    /// write, so the session sees the conversation in order (DATA is then
    /// always the last command of its "group").
    fn next_piece(&mut self) -> Result<(), End> {
        loop {
            if let Some(i) = self.raw.iter().position(|&b| b == b'\n') {
                let rest = self.raw.split_off(i + 1);
                let line = std::mem::replace(&mut self.raw, rest);
                self.ready = crlf(&line, &mut self.prev_cr);
                return Ok(());
            }
            if self.eof {
                if self.raw.is_empty() {
                    return Err(End::Lost);
                }
                let line = std::mem::take(&mut self.raw);
                self.ready = crlf(&line, &mut self.prev_cr);
                return Ok(());
            }
            let mut buf = [0u8; 16 * 1024];
            match self.input.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.raw.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.failed = Some(e);
                    return Err(End::Lost);
                }
            }
        }
    }
}

impl<R: Read, W: Write> server::Driver for BsDriver<'_, '_, R, W> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, End> {
        if self.ready.is_empty() {
            self.next_piece()?;
        }
        let n = self.ready.len().min(buf.len());
        buf[..n].copy_from_slice(&self.ready[..n]);
        self.ready.drain(..n);
        Ok(n)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), End> {
        match self
            .output
            .write_all(bytes)
            .and_then(|()| self.output.flush())
        {
            Ok(()) => Ok(()),
            Err(e) => {
                self.failed = Some(e);
                Err(End::Lost)
            }
        }
    }

    async fn sleep(&mut self, d: std::time::Duration) {
        std::thread::sleep(d);
    }

    /// Every recipient is postdrop's (and then cleanup's) to judge.
    async fn rcpt(&mut self, _: &Session, _: &RcptTo) -> Result<(), Reply> {
        Ok(())
    }

    async fn content(&mut self, _: &Session, data: Vec<u8>) -> bool {
        self.content.extend_from_slice(&data);
        true
    }

    /// Hands the message to postdrop; its exit status becomes the reply.
    async fn data_end(&mut self, s: &Session) -> Reply {
        let mut attributes = vec![("protocol".to_string(), s.proto().to_string())];
        if let Some(name) = s.helo() {
            attributes.push(("helo_name".into(), name.to_string()));
        }
        // The SMTP client named its sender (MAIL FROM), so never "the caller".
        let sender = match s.sender() {
            Some(ReversePath::Mailbox(m)) => SubmitSender::Given(m.to_string()),
            Some(ReversePath::Null) | None => SubmitSender::Null,
        };
        let req = SubmitRequest {
            sender,
            recipients: s.recipients().iter().map(|m| m.to_string()).collect(),
            attributes,
        };
        let content = std::mem::take(&mut self.content);
        match (self.submit)(req, &content) {
            Ok(id) => server::reply(250, (2, 0, 0), format!("Ok: queued as {id}")),
            Err((EX_TEMPFAIL, _)) => server::reply(451, (4, 3, 0), "Error: queue file write error"),
            Err((EX_NOPERM, _)) => server::reply(554, (5, 7, 1), "Error: submission not allowed"),
            Err((EX_DATAERR, _)) => {
                server::reply(554, (5, 6, 0), "Error: message or envelope refused")
            }
            Err((_, _)) => server::reply(451, (4, 3, 0), "Error: submission failed"),
        }
    }

    fn reset(&mut self) {
        self.content.clear();
    }
}

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The first 20 characters of ctime(3) in local time, as Postfix's mailq
/// shows arrival times: "Thu Jan  1 00:00:00 ".
pub fn mailq_time(t: std::time::SystemTime) -> String {
    let tm = postern_mailtime::local(t);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} ",
        DAYS[(tm.weekday % 7) as usize],
        MONTHS[(tm.month.clamp(1, 12) - 1) as usize],
        tm.day,
        tm.hour,
        tm.minute,
        tm.second
    )
}

/// Lists the queue in Postfix's mailq format, with each deferred
/// recipient's reason (the one reader is `postern queue list`'s, in
/// src/queue.rs). Err = (exit status, message): 77 when the caller may not
/// read the queue.
pub fn mailq(dirs: &QueueDirs, out: &mut impl Write) -> Result<(), (i32, String)> {
    let items = crate::queue::read_queue(dirs)?;
    crate::queue::format_mailq(&items, out).map_err(|e| (EX_TEMPFAIL, format!("write: {e}")))
}

/// Table types whose source is a text file (read as aliases(5) for alias_maps).
const FILE_TYPES: &[&str] = &["hash", "texthash", "btree", "lmdb", "cdb", "dbm", "sdbm"];

/// `newaliases`: loads every file-backed map in alias_maps, prints
/// "postern: FILE: N aliases" for each, and errors as "FILE:LINE: reason".
/// Returns 0 when all loaded, 1 otherwise.
pub fn newaliases(main: &MainCf, out: &mut impl Write, err: &mut impl Write) -> i32 {
    let mut status = 0;
    for spec in postern_maps::split_map_list(&main.str("alias_maps")) {
        let s = spec.trim();
        let s = s.strip_prefix("proxy:").unwrap_or(s);
        let Some((kind, name)) = s.split_once(':') else {
            let _ = writeln!(
                err,
                "postern: error: {spec}: expected a table as \"type:name\""
            );
            status = 1;
            continue;
        };
        if !FILE_TYPES.contains(&kind) {
            continue;
        }
        let path = if Path::new(name).is_absolute() {
            PathBuf::from(name)
        } else {
            main.config_dir().join(name)
        };
        match postern_maps::Aliases::load(&path) {
            Ok(a) => {
                for w in a.warnings() {
                    let _ = writeln!(err, "postern: warning: {w}");
                }
                let _ = writeln!(out, "postern: {}: {} aliases", path.display(), a.len());
            }
            Err(e) => {
                let _ = writeln!(err, "postern: error: {e}");
                status = 1;
            }
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn ctx() -> Context {
        Context {
            postdrop: PathBuf::from("/nonexistent/postdrop"),
            config_env: None,
            myorigin: "example.test".into(),
            myhostname: "mail.example.test".into(),
            mail_name: "Postern".into(),
            size_limit: 1000,
            login: "alice".into(),
        }
    }

    #[test]
    fn options_parse_like_getopt() {
        let o = parse_args(&args(&[
            "-ti",
            "-fbob@x.test",
            "-F",
            "Bob B",
            "-oem",
            "-odb",
            "carol",
        ]))
        .unwrap();
        assert!(o.extract && o.ignore_dots);
        assert_eq!(o.sender.as_deref(), Some("bob@x.test"));
        assert_eq!(o.full_name.as_deref(), Some("Bob B"));
        assert_eq!(o.recipients, ["carol"]);
        assert_eq!(o.mode, Mode::Deliver);
        let o = parse_args(&args(&[
            "-oi", "-v", "-N", "never", "-R", "hdrs", "-V", "id", "x",
        ]))
        .unwrap();
        assert!(o.ignore_dots);
        assert_eq!(o.recipients, ["x"]);
        assert_eq!(parse_args(&args(&["-bs"])).unwrap().mode, Mode::Smtp);
        assert_eq!(parse_args(&args(&["-b", "p"])).unwrap().mode, Mode::Mailq);
        assert_eq!(parse_args(&args(&["-bi"])).unwrap().mode, Mode::Newaliases);
        assert_eq!(parse_args(&args(&["-I"])).unwrap().mode, Mode::Newaliases);
        let o = parse_args(&args(&["-C", "/etc/other/main.cf", "--", "-odd"])).unwrap();
        assert_eq!(o.config_dir, Some(PathBuf::from("/etc/other")));
        assert_eq!(o.recipients, ["-odd"]);
    }

    #[test]
    fn bad_options_are_usage_errors() {
        let e = parse_args(&args(&["-z"])).unwrap_err();
        assert!(e.contains("invalid option -- 'z'"), "{e}");
        assert!(
            parse_args(&args(&["-f"]))
                .unwrap_err()
                .contains("requires an argument")
        );
        assert!(parse_args(&args(&["-bd"])).is_err());
        assert!(parse_args(&args(&["-bx"])).is_err());
        assert_eq!(parse_args(&args(&["-q"])).unwrap().mode, Mode::Flush);
        assert_eq!(parse_args(&args(&["-q30m"])).unwrap().mode, Mode::Deliver);
        assert_eq!(main("sendmail", &args(&["-z"]), None), EX_USAGE);
    }

    #[test]
    fn dispatch_by_name() {
        assert_eq!(dispatch("/usr/sbin/postern", &args(&["status"])), None);
        assert_eq!(dispatch("/x/sendmail", &args(&["-Z"])), Some(EX_USAGE));
        assert_eq!(
            dispatch("postern", &args(&["sendmail", "-Z"])),
            Some(EX_USAGE)
        );
        assert_eq!(
            dispatch("postern", &args(&["-c", "/nonexistent", "mailq"])),
            Some(EX_CONFIG)
        );
    }

    #[test]
    fn addresses_from_headers() {
        assert_eq!(
            header_addresses(
                r#"Bob <bob@x.test>, "Doe, Jane" <jane@y.test>, carol@z.test (Carol)"#
            ),
            ["bob@x.test", "jane@y.test", "carol@z.test"]
        );
        assert_eq!(
            header_addresses("team: a@x.test, b@x.test; c@x.test"),
            ["a@x.test", "b@x.test", "c@x.test"]
        );
        assert_eq!(
            header_addresses("undisclosed-recipients:;"),
            Vec::<String>::new()
        );
        assert_eq!(
            header_addresses("<@relay.test:dave@x.test>"),
            ["dave@x.test"]
        );
        assert_eq!(header_addresses(r#""odd <name>" <e@x.test>"#), ["e@x.test"]);
        assert_eq!(header_addresses("alice"), ["alice"]);
    }

    #[test]
    fn senders_and_from_fields() {
        assert_eq!(envelope_sender(None), SubmitSender::Caller);
        assert_eq!(envelope_sender(Some("")), SubmitSender::Null);
        assert_eq!(envelope_sender(Some("<>")), SubmitSender::Null);
        assert_eq!(
            envelope_sender(Some("<a@b.test>")),
            SubmitSender::Given("a@b.test".into())
        );
        assert_eq!(
            from_field("Bob Smith", "bob@x"),
            "From: Bob Smith <bob@x>\n"
        );
        assert_eq!(
            from_field("Smith, Bob", "bob@x"),
            "From: \"Smith, Bob\" <bob@x>\n"
        );
        assert_eq!(from_field("A\nB: x", "a@x"), "From: \"AB: x\" <a@x>\n");
    }

    #[test]
    fn deliver_needs_recipients_and_a_postdrop() {
        let o = parse_args(&[]).unwrap();
        let e = deliver(&ctx(), &o, &mut &b"Subject: x\n\nhi\n"[..]).unwrap_err();
        assert_eq!(e.0, EX_USAGE);
        let o = parse_args(&args(&["-t"])).unwrap();
        let e = deliver(&ctx(), &o, &mut &b"Subject: x\n\nhi\n"[..]).unwrap_err();
        assert_eq!(e.0, EX_DATAERR);
        assert!(e.1.contains("No recipient"), "{e:?}");
        let o = parse_args(&args(&["bob"])).unwrap();
        let e = deliver(&ctx(), &o, &mut &b"hi\n"[..]).unwrap_err();
        assert_eq!(e.0, EX_TEMPFAIL);
        assert!(e.1.contains("/nonexistent/postdrop"), "{e:?}");
    }

    fn session(
        input: &[u8],
        result: Result<String, (i32, String)>,
    ) -> (String, Vec<(SubmitRequest, Vec<u8>)>) {
        let mut got = Vec::new();
        let mut out = Vec::new();
        let mut submit = |r: SubmitRequest, c: &[u8]| {
            got.push((r, c.to_vec()));
            result.clone()
        };
        assert_eq!(
            smtp_session(&ctx(), &mut &input[..], &mut out, &mut submit),
            0
        );
        (String::from_utf8(out).unwrap(), got)
    }

    #[test]
    fn smtp_session_submits_what_data_carried() {
        let input = b"EHLO me\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<Postmaster>\r\nDATA\r\nSubject: t\r\n\r\n..dot\r\n.\r\nQUIT\r\n";
        let (out, got) = session(input, Ok("ABCDEF123".into()));
        let codes: Vec<&str> = out.lines().map(|l| &l[..4]).collect();
        assert_eq!(codes[0], "220 ");
        assert!(
            out.contains("250-mail.example.test\r\n") && out.contains("250 SMTPUTF8\r\n"),
            "{out}"
        );
        assert!(out.contains("354 End data"), "{out}");
        assert!(
            out.contains("250 2.0.0 Ok: queued as ABCDEF123\r\n"),
            "{out}"
        );
        assert!(out.ends_with("221 2.0.0 Bye\r\n"), "{out}");
        assert_eq!(got.len(), 1);
        let (req, content) = &got[0];
        assert_eq!(req.sender, SubmitSender::Given("a@x.test".into()));
        assert_eq!(
            req.recipients,
            ["bob@example.test", "postmaster@example.test"]
        );
        assert!(
            req.attributes
                .contains(&("protocol".into(), "ESMTP".into()))
        );
        assert!(req.attributes.contains(&("helo_name".into(), "me".into())));
        assert_eq!(content, b"Subject: t\n\n.dot\n");
    }

    #[test]
    fn smtp_session_with_bare_newlines_and_errors() {
        // Typed by a person: LF only. Null sender, order errors, failures.
        let input = b"HELO me\nRCPT TO:<b@x>\nDATA\nMAIL FROM:<>\nMAIL FROM:<c@x>\nRCPT TO:<b@x>\nDATA\nhello\n.\nBOGUS\n";
        let (out, got) = session(input, Err((EX_TEMPFAIL, String::new())));
        assert!(out.contains("503 5.5.1 Error: need MAIL command"), "{out}");
        assert!(out.contains("503 5.5.1 Error: need RCPT command"), "{out}");
        assert!(
            out.contains("503 5.5.1 Error: nested MAIL command"),
            "{out}"
        );
        assert!(out.contains("451 4.3.0"), "{out}");
        assert!(
            out.contains("\r\n500 ") || out.contains("\r\n502 "),
            "{out}"
        );
        assert_eq!(got[0].0.sender, SubmitSender::Null);
        assert_eq!(got[0].1, b"hello\n");
        assert!(
            got[0]
                .0
                .attributes
                .contains(&("protocol".into(), "SMTP".into()))
        );
    }

    #[test]
    fn smtp_session_refuses_too_big() {
        let mut input = b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 2000));
        input.extend(b"\r\n.\r\nQUIT\r\n");
        let (out, got) = session(&input, Ok("X".into()));
        assert!(
            out.contains("552 5.3.4 Error: message file too big"),
            "{out}"
        );
        assert!(got.is_empty());
    }

    #[test]
    fn smtp_session_is_smtpds_session() {
        // Written ahead in one go, as through a pipe: answered in order
        // (one line at a time, so DATA is never "followed" by commands),
        // with BDAT and smtpd's parameter checks.
        let input = b"EHLO me\r\nMAIL FROM:<a@x> FOO=1\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\none\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<c@x>\r\nBDAT 5 LAST\r\ntwo\r\nQUIT\r\n";
        let (out, got) = session(input, Ok("Q".into()));
        assert!(out.contains("250-CHUNKING\r\n"), "{out}");
        assert!(
            out.contains("555 5.5.4 Unsupported option: FOO\r\n"),
            "{out}"
        );
        assert!(!out.contains("554 5.5.0"), "{out}");
        assert_eq!(out.matches("Ok: queued as Q").count(), 2, "{out}");
        assert!(out.ends_with("221 2.0.0 Bye\r\n"), "{out}");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, b"one\n");
        assert_eq!(got[1].0.sender, SubmitSender::Null);
        assert_eq!(got[1].0.recipients, ["c@x"]);
        assert_eq!(got[1].1, b"two\n");
    }

    #[test]
    fn smtp_session_ended_mid_data_submits_nothing() {
        let (out, got) = session(
            b"HELO me\nMAIL FROM:<a@x>\nRCPT TO:<b@x>\nDATA\npartial",
            Ok("Q".into()),
        );
        assert!(
            out.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n"),
            "{out}"
        );
        assert!(got.is_empty());
    }

    #[test]
    fn mailq_formats_and_counts() {
        use postern_queue::Queue;
        let t = tempfile::tempdir().unwrap();
        let dirs = QueueDirs::new(t.path().join("q"));
        let mut out = Vec::new();
        mailq(&dirs, &mut out).unwrap();
        assert_eq!(out, b"Mail queue is empty\n");
        dirs.create_all().unwrap();
        let mut w = postern_queue::QueueFileWriter::create_in(&dirs, Queue::Incoming).unwrap();
        w.write_envelope(&postern_queue::Envelope {
            arrival: std::time::SystemTime::now(),
            sender: "a@x.test".parse().unwrap(),
            recipients: vec![postern_queue::Recipient::new(
                "b@y.test".parse().unwrap(),
                "b@y.test",
            )],
            attributes: vec![],
        })
        .unwrap();
        w.write_content(&[b'x'; 1500]).unwrap();
        let id = w.commit().unwrap();
        dirs.move_file(&id, Queue::Incoming, Queue::Deferred)
            .unwrap();
        let mut out = Vec::new();
        mailq(&dirs, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("-Queue ID-"), "{text}");
        assert!(lines[1].starts_with(id.as_str()), "{text}");
        assert!(
            lines[1].contains(" 1500 ") && lines[1].ends_with(" a@x.test"),
            "{text}"
        );
        assert_eq!(lines[2], format!("{:41}b@y.test", ""));
        assert_eq!(lines.last(), Some(&"-- 2 Kbytes in 1 Request."));
    }

    #[test]
    fn newaliases_counts_and_reports_lines() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("aliases"), "a: b\nc: d, e\n").unwrap();
        std::fs::write(t.path().join("broken"), "a: b\n\"open: x\n").unwrap();
        std::fs::write(
            t.path().join("main.cf"),
            "alias_maps = hash:aliases, unix:passwd.byname, texthash:broken\n",
        )
        .unwrap();
        let m = MainCf::load(t.path()).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(newaliases(&m, &mut out, &mut err), 1);
        let out = String::from_utf8(out).unwrap();
        let err = String::from_utf8(err).unwrap();
        assert_eq!(
            out,
            format!(
                "postern: {}: 2 aliases\n",
                t.path().join("aliases").display()
            )
        );
        assert!(
            err.contains(&format!("{}:2:", t.path().join("broken").display())),
            "{err}"
        );
    }
}
