//! The kernel command line as the kernel itself reads it, so that kup can inherit the running `/proc/cmdline`,
//! edit it (`[kernel.cmdline]` in a plan) and hand the new kernel text that means exactly what the plan says.
//!
//! Parsing mirrors `next_arg()` in the kernel's `lib/cmdline.c` and the `--` handling of `parse_args()` in
//! `kernel/params.c` byte for byte, including its odd corners: there is no escape character, a quote only toggles
//! whether whitespace splits, and only a quote that opens the whole parameter or its value (and the matching last
//! character) is removed. Rendering goes the other way and *checks itself*: every parameter is written in the
//! shortest form that the same parser reads back as the same parameter, and [`Cmdline::render`] refuses rather than
//! emit text the new kernel would read differently.
//!
//! Parameter names are compared the way the kernel's `parameq()` does: `-` and `_` are the same character, so
//! `remove = ["cpuhp-parallel"]` also removes `cpuhp_parallel=1`.
//!
//! One deliberate divergence: the kernel's `isspace()` (lib/ctype.c, Latin-1) also counts byte 0xA0 as a space.
//! kup works on UTF-8 text, where 0xA0 only occurs inside a multi-byte character, so only the ASCII whitespace bytes
//! (space, `\t`, `\n`, `\v`, `\f`, `\r`) separate parameters here.

use std::fmt;

/// One kernel parameter: `key`, `key=value` or `key=` (an empty value, which the kernel distinguishes from none).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Param {
    key: String,
    value: Option<String>,
}

/// A parsed kernel command line: the kernel's parameters in their original order, duplicates included (the kernel
/// applies `console=tty0 console=ttyS0` both, and order matters), and the arguments after `--` that go to init.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Cmdline {
    params: Vec<Param>,
    init_args: Vec<Param>,
}

/// What to do to a command line, in the order kup applies it: inherit → remove → set → append.
///
/// This is the `[kernel.cmdline]` table of a plan; `set` is a list of pairs rather than a map because the order
/// in which absent keys are appended is visible on the new kernel's command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct CmdlineEdit {
    /// Start from the running kernel's command line (else from an empty one).
    pub(crate) inherit: bool,
    /// Keys to drop, every occurrence, whatever the value.
    pub(crate) remove: Vec<String>,
    /// `key = value` pairs to replace in place (first occurrence) or append.
    pub(crate) set: Vec<(String, String)>,
    /// Parameters to add verbatim (`nosmt`, `mitigations=off`) unless already present exactly.
    pub(crate) append: Vec<String>,
}

/// Why a command line or an edit of one cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CmdlineError {
    /// A parameter name the kernel could not read back as one name.
    InvalidKey { key: String, reason: &'static str },
    /// A parameter that no quoting makes the kernel read back unchanged.
    Unrepresentable { param: String },
    /// An `append` entry that is not exactly one parameter.
    NotOneParam { text: String, found: usize },
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineError::InvalidKey { key, reason } => {
                write!(f, "invalid kernel parameter name {key:?}: {reason}")
            }
            CmdlineError::Unrepresentable { param } => write!(
                f,
                "kernel parameter {param:?} cannot be written on a command line so that the kernel reads it back \
                 unchanged (the kernel has no escape for '\"'; a quote only toggles whether spaces split)"
            ),
            CmdlineError::NotOneParam { text, found } => write!(
                f,
                "{text:?} must be exactly one kernel parameter (like \"nosmt\" or \"key=value\"), but it reads as \
                 {found}; list each parameter separately"
            ),
        }
    }
}

impl std::error::Error for CmdlineError {}

/// The kernel's `isspace()` for the bytes that can stand alone in UTF-8 (see the module docs for 0xA0).
fn is_kernel_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn skip_spaces(bytes: &[u8], mut pos: usize) -> usize {
    while bytes.get(pos).is_some_and(|&b| is_kernel_space(b)) {
        pos += 1;
    }
    pos
}

/// One token as `next_arg()` cuts it.
struct Token {
    param: Param,
    /// Index just past the token's last byte (before the separating whitespace).
    end: usize,
    /// Where the next token may start (separating whitespace skipped).
    next: usize,
    /// The token ended inside quotes: whatever followed it would have been swallowed into it.
    open_quote: bool,
}

/// `next_arg()` from lib/cmdline.c. `start` must not point at whitespace; every index used for slicing is either a
/// bound of `text` or next to an ASCII byte (`"`, `=`, whitespace), so slices always fall on UTF-8 boundaries.
fn next_arg(text: &str, start: usize) -> Token {
    let b = text.as_bytes();
    let mut args = start;
    let mut in_quote = false;
    let mut quoted = false;
    if b.get(args) == Some(&b'"') {
        args += 1;
        in_quote = true;
        quoted = true;
    }

    let mut i = 0;
    let mut equals = 0;
    while let Some(&c) = b.get(args + i) {
        if is_kernel_space(c) && !in_quote {
            break;
        }
        // As in the kernel, an '=' at offset 0 never splits (so "=x" is a name), quotes notwithstanding.
        if equals == 0 && c == b'=' {
            equals = i;
        }
        if c == b'"' {
            in_quote = !in_quote;
        }
        i += 1;
    }
    let end = args + i;

    // The kernel cuts strings by writing NULs; `last_cleared` models its `args[i-1] = '\0'`, which later checks see.
    let mut last_cleared = false;
    let mut key = (args, end);
    let mut value = None;
    if equals != 0 {
        key = (args, args + equals);
        let mut v = (args + equals + 1, end);
        if v.0 < end && b[v.0] == b'"' {
            v.0 += 1;
            if b[end - 1] == b'"' {
                last_cleared = true;
                // A lone opening quote is also the closing one: the value is empty.
                v.1 = (end - 1).max(v.0);
            }
        }
        value = Some(v);
    }
    if quoted && i > 0 && !last_cleared && b[end - 1] == b'"' {
        match &mut value {
            Some(v) => v.1 = v.1.min(end - 1).max(v.0),
            None => key.1 = end - 1,
        }
    }

    let next = if end < b.len() { end + 1 } else { end };
    Token {
        param: Param {
            key: text[key.0..key.1].to_owned(),
            value: value.map(|(s, e)| text[s..e].to_owned()),
        },
        end,
        next: skip_spaces(b, next),
        open_quote: in_quote,
    }
}

/// `parse_args()`: parameters up to a bare `--`; returns them and where the text after `--` starts, if any.
fn parse_args(text: &str, start: usize) -> (Vec<Param>, Option<usize>) {
    let mut params = Vec::new();
    let mut pos = skip_spaces(text.as_bytes(), start);
    while pos < text.len() {
        let token = next_arg(text, pos);
        pos = token.next;
        if token.param.is_separator() {
            return (params, Some(pos));
        }
        params.push(token.param);
    }
    (params, None)
}

/// The kernel's `parameq()`: names are equal when they differ only in `-` versus `_`.
pub(crate) fn keys_match(a: &str, b: &str) -> bool {
    let norm = |c: u8| if c == b'-' { b'_' } else { c };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| norm(x) == norm(y))
}

/// Checks that `key` can name a parameter in an edit: one word that the kernel reads back as this exact name.
pub(crate) fn validate_key(key: &str) -> Result<(), CmdlineError> {
    let reason = if key.is_empty() {
        Some("it is empty")
    } else if key.bytes().any(is_kernel_space) {
        Some("it contains whitespace")
    } else if key.contains('=') {
        Some("it contains '=' (write the value separately)")
    } else if key.contains('"') {
        Some("it contains '\"'")
    } else if key == "--" {
        Some("\"--\" ends the kernel's parameters; it is not a parameter")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CmdlineError::InvalidKey {
            key: key.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

impl Param {
    /// A parameter from an edit; refused when the kernel could not read it back unchanged.
    pub(crate) fn new(key: &str, value: Option<&str>) -> Result<Param, CmdlineError> {
        validate_key(key)?;
        let param = Param {
            key: key.to_owned(),
            value: value.map(str::to_owned),
        };
        match param.render_token(false) {
            Some(_) => Ok(param),
            None => Err(CmdlineError::Unrepresentable {
                param: param.plain(),
            }),
        }
    }

    /// Exactly one parameter written as on a command line (`nosmt`, `a=b`, `dyndbg="file x.c +p"`).
    pub(crate) fn parse_one(text: &str) -> Result<Param, CmdlineError> {
        let (params, after_dashes) = parse_args(text, 0);
        let separator = usize::from(after_dashes.is_some());
        let init_args = after_dashes.map_or(0, |start| parse_args(text, start).0.len());
        let found = params.len() + separator + init_args;
        let param = match <[Param; 1]>::try_from(params) {
            Ok([param]) if found == 1 => param,
            Ok(_) | Err(_) => {
                return Err(CmdlineError::NotOneParam {
                    text: text.to_owned(),
                    found,
                });
            }
        };
        validate_key(&param.key)?;
        match param.render_token(false) {
            Some(_) => Ok(param),
            None => Err(CmdlineError::Unrepresentable {
                param: param.plain(),
            }),
        }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// `None` for a bare flag, `Some("")` for `key=`.
    pub(crate) fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// Whether this parameter's name is `key`, comparing as the kernel does (`-` equals `_`).
    pub(crate) fn has_key(&self, key: &str) -> bool {
        keys_match(&self.key, key)
    }

    /// `key=value` without quotes: what init receives in argv for an init argument, and what messages show.
    pub(crate) fn plain(&self) -> String {
        match &self.value {
            Some(v) => format!("{}={v}", self.key),
            None => self.key.clone(),
        }
    }

    fn is_separator(&self) -> bool {
        self.value.is_none() && self.key == "--"
    }

    /// The shortest spelling that `next_arg()` reads back as exactly this parameter, as one token. Unless `last`
    /// (nothing follows the token), the spelling must also close its quotes, or it would swallow what follows.
    fn render_token(&self, last: bool) -> Option<String> {
        if self.is_separator() {
            return None;
        }
        let k = &self.key;
        let candidates = match &self.value {
            None => [k.clone(), format!("\"{k}\""), format!("\"{k}")],
            Some(v) => [
                format!("{k}={v}"),
                format!("{k}=\"{v}\""),
                format!("\"{k}={v}\""),
            ],
        };
        candidates
            .into_iter()
            .find(|c| self.reads_back_from(c, last))
    }

    fn reads_back_from(&self, candidate: &str, last: bool) -> bool {
        if candidate.is_empty() || is_kernel_space(candidate.as_bytes()[0]) {
            return false;
        }
        let token = next_arg(candidate, 0);
        token.end == candidate.len() && token.param == *self && (last || !token.open_quote)
    }
}

impl fmt::Display for Param {
    /// The command-line spelling; for the rare parameter that has none, its unquoted `key=value`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.render_token(true) {
            Some(token) => f.write_str(&token),
            None => f.write_str(&self.plain()),
        }
    }
}

impl Cmdline {
    /// Parses command-line text as the kernel does; never fails (the kernel accepts any text too). A trailing
    /// newline, as in `/proc/cmdline`, is whitespace like any other. Init arguments end at a second `--`; the kernel
    /// ignores whatever follows it, and so does this model.
    pub(crate) fn parse(text: &str) -> Cmdline {
        let (params, after_dashes) = parse_args(text, 0);
        let init_args = match after_dashes {
            Some(start) => parse_args(text, start).0,
            None => Vec::new(),
        };
        Cmdline { params, init_args }
    }

    /// The kernel's parameters in order, duplicates included.
    pub(crate) fn params(&self) -> &[Param] {
        &self.params
    }

    /// What follows `--`: the kernel passes these to init.
    #[cfg(test)] // only the unit tests use it
    pub(crate) fn init_args(&self) -> &[Param] {
        &self.init_args
    }

    /// The argv that init receives after its name (the kernel joins `key=value` back together).
    #[cfg(test)] // only the unit tests use it
    pub(crate) fn init_argv(&self) -> Vec<String> {
        self.init_args.iter().map(Param::plain).collect()
    }

    #[cfg(test)] // only the unit tests use it
    pub(crate) fn is_empty(&self) -> bool {
        self.params.is_empty() && self.init_args.is_empty()
    }

    /// The first parameter named `key` (`-` and `_` equivalent).
    #[cfg(test)] // only the unit tests use it
    pub(crate) fn get(&self, key: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.has_key(key))
    }

    /// Every parameter named `key`, in order.
    pub(crate) fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Param> + 'a {
        self.params.iter().filter(move |p| p.has_key(key))
    }

    #[cfg(test)] // only the unit tests use it
    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Drops every parameter named `key`, whatever its value; returns how many were dropped.
    pub(crate) fn remove(&mut self, key: &str) -> usize {
        let before = self.params.len();
        self.params.retain(|p| !p.has_key(key));
        before - self.params.len()
    }

    /// Replaces the first parameter named `key` in place with `key=value` (in the spelling given here) and drops
    /// any later ones, so the kernel sees one value; appends it when absent.
    pub(crate) fn set(&mut self, key: &str, value: &str) -> Result<(), CmdlineError> {
        let param = Param::new(key, Some(value))?;
        match self.params.iter().position(|p| p.has_key(key)) {
            Some(first) => {
                let mut index = 0;
                self.params.retain(|p| {
                    let keep = index <= first || !p.has_key(key);
                    index += 1;
                    keep
                });
                self.params[first] = param;
            }
            None => self.params.push(param),
        }
        Ok(())
    }

    /// Appends one parameter given as command-line text (`nosmt`, `mitigations=off`) unless the same parameter
    /// (same name, same value or same absence of one) is already there. Returns whether it was appended.
    pub(crate) fn append(&mut self, text: &str) -> Result<bool, CmdlineError> {
        let param = Param::parse_one(text)?;
        let present = self
            .params
            .iter()
            .any(|p| p.has_key(&param.key) && p.value == param.value);
        if !present {
            self.params.push(param);
        }
        Ok(!present)
    }

    /// The text to hand the new kernel: every parameter in its shortest spelling that the kernel reads back
    /// unchanged, separated by single spaces, then `-- init args` when there are any. No trailing newline.
    ///
    /// Fails only for a parameter that no spelling preserves, which only odd quoting in the parsed text can produce
    /// (a name ending in an unmatched quote, an empty name with a value, `--` as an init argument).
    pub(crate) fn render(&self) -> Result<String, CmdlineError> {
        // `None` stands for the `--` before the init arguments.
        let words: Vec<Option<&Param>> = if self.init_args.is_empty() {
            self.params.iter().map(Some).collect()
        } else {
            let init = self.init_args.iter().map(Some);
            self.params
                .iter()
                .map(Some)
                .chain(std::iter::once(None))
                .chain(init)
                .collect()
        };
        let last = words.len().saturating_sub(1);
        let mut tokens = Vec::with_capacity(words.len());
        for (index, word) in words.into_iter().enumerate() {
            let token = match word {
                None => "--".to_owned(),
                Some(param) => param.render_token(index == last).ok_or_else(|| {
                    CmdlineError::Unrepresentable {
                        param: param.plain(),
                    }
                })?,
            };
            tokens.push(token);
        }
        Ok(tokens.join(" "))
    }
}

impl fmt::Display for Cmdline {
    /// For people: [`Cmdline::render`]'s text, except that a parameter with no faithful spelling shows unquoted.
    /// Use `render` for text that goes to a kernel.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.render() {
            Ok(text) => f.write_str(&text),
            Err(_) => {
                let plain = self.params.iter().map(Param::plain);
                let init = self.init_args.iter().map(Param::plain);
                let words: Vec<String> = if self.init_args.is_empty() {
                    plain.collect()
                } else {
                    plain
                        .chain(std::iter::once("--".to_owned()))
                        .chain(init)
                        .collect()
                };
                f.write_str(&words.join(" "))
            }
        }
    }
}

impl CmdlineEdit {
    /// Every problem in the edit at once (invalid names, parameters that cannot be written), for plan validation.
    #[cfg(test)] // only the unit tests use it
    pub(crate) fn validate(&self) -> Vec<CmdlineError> {
        let removes = self.remove.iter().map(|key| validate_key(key));
        let sets = self
            .set
            .iter()
            .map(|(k, v)| Param::new(k, Some(v)).map(drop));
        let appends = self
            .append
            .iter()
            .map(|text| Param::parse_one(text).map(drop));
        removes
            .chain(sets)
            .chain(appends)
            .filter_map(Result::err)
            .collect()
    }

    /// The new kernel's command line: `running` (when inheriting) with the removals, settings and additions applied
    /// in that order. Fails on the first problem `CmdlineEdit::validate` would report.
    pub(crate) fn apply(&self, running: &Cmdline) -> Result<Cmdline, CmdlineError> {
        let mut cmdline = if self.inherit {
            running.clone()
        } else {
            Cmdline::default()
        };
        for key in &self.remove {
            validate_key(key)?;
            cmdline.remove(key);
        }
        for (key, value) in &self.set {
            cmdline.set(key, value)?;
        }
        for text in &self.append {
            cmdline.append(text)?;
        }
        Ok(cmdline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kv(key: &str, value: &str) -> Param {
        Param {
            key: key.to_owned(),
            value: Some(value.to_owned()),
        }
    }

    fn flag(key: &str) -> Param {
        Param {
            key: key.to_owned(),
            value: None,
        }
    }

    fn keys(cmdline: &Cmdline) -> Vec<&str> {
        cmdline.params().iter().map(Param::key).collect()
    }

    #[test]
    fn debian_proc_cmdline_with_trailing_newline() {
        let c = Cmdline::parse(
            "BOOT_IMAGE=/boot/vmlinuz-6.1.0-18-amd64 root=UUID=0b6a4c2e-7c39-4f8e-a3c1-5d2f8e9b1a77 ro quiet\n",
        );
        assert_eq!(
            c.params(),
            [
                kv("BOOT_IMAGE", "/boot/vmlinuz-6.1.0-18-amd64"),
                kv("root", "UUID=0b6a4c2e-7c39-4f8e-a3c1-5d2f8e9b1a77"),
                flag("ro"),
                flag("quiet"),
            ]
        );
        assert!(c.init_args().is_empty());
        assert_eq!(
            c.render().unwrap(),
            "BOOT_IMAGE=/boot/vmlinuz-6.1.0-18-amd64 root=UUID=0b6a4c2e-7c39-4f8e-a3c1-5d2f8e9b1a77 ro quiet"
        );
    }

    #[test]
    fn rhel_grub_cmdline_splits_at_the_first_equals_only() {
        let c = Cmdline::parse(
            "BOOT_IMAGE=(hd0,gpt2)/vmlinuz-4.18.0-513.el8.x86_64 root=/dev/mapper/rhel-root ro crashkernel=auto \
             resume=/dev/mapper/rhel-swap rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap rhgb quiet",
        );
        assert_eq!(c.get("crashkernel"), Some(&kv("crashkernel", "auto")));
        assert_eq!(c.get_all("rd.lvm.lv").count(), 2);
        assert_eq!(
            c.get("BOOT_IMAGE").and_then(Param::value),
            Some("(hd0,gpt2)/vmlinuz-4.18.0-513.el8.x86_64")
        );
        assert_eq!(keys(&c).last(), Some(&"quiet"));
    }

    /// `text` parses to `params` and renders as `rendered`.
    #[track_caller]
    fn round_trip(text: &str, params: &[Param], rendered: &str) -> Cmdline {
        let c = Cmdline::parse(text);
        assert_eq!(c.params(), params);
        assert_eq!(c.render().unwrap(), rendered);
        c
    }

    #[test]
    fn quoted_value_keeps_its_spaces_and_loses_its_quotes() {
        let text = "quiet dyndbg=\"file drivers/usb/* +p\" loglevel=7";
        let params = [
            flag("quiet"),
            kv("dyndbg", "file drivers/usb/* +p"),
            kv("loglevel", "7"),
        ];
        round_trip(text, &params, text);
    }

    #[test]
    fn quotes_around_the_whole_param_are_equivalent_to_quotes_around_the_value() {
        let whole = Cmdline::parse("\"foo=bar baz\" next");
        let value = Cmdline::parse("foo=\"bar baz\" next");
        assert_eq!(whole, value);
        assert_eq!(whole.params(), [kv("foo", "bar baz"), flag("next")]);
        assert_eq!(whole.render().unwrap(), "foo=\"bar baz\" next");
    }

    #[test]
    fn double_dash_hands_the_rest_to_init() {
        let c = round_trip(
            "root=/dev/sda1 ro -- single  emergency=1\n",
            &[kv("root", "/dev/sda1"), flag("ro")],
            "root=/dev/sda1 ro -- single emergency=1",
        );
        assert_eq!(c.init_args(), [flag("single"), kv("emergency", "1")]);
        assert_eq!(c.init_argv(), ["single", "emergency=1"]);
    }

    #[test]
    fn only_a_bare_double_dash_separates() {
        // Ubuntu's live media pass "---"; "--=x" has a value. Neither ends the kernel's parameters.
        let c = Cmdline::parse("boot=casper quiet splash --- --=x");
        assert_eq!(keys(&c), ["boot", "quiet", "splash", "---", "--"]);
        assert!(c.init_args().is_empty());
        // A quoted "--" is still "--" once the kernel strips the quotes.
        let quoted = Cmdline::parse("a \"--\" b");
        assert_eq!(quoted.params(), [flag("a")]);
        assert_eq!(quoted.init_args(), [flag("b")]);
    }

    #[test]
    fn a_second_double_dash_ends_init_args_like_the_kernel() {
        let c = Cmdline::parse("ro -- single -- ignored");
        assert_eq!(c.init_args(), [flag("single")]);
    }

    #[test]
    fn duplicate_consoles_are_kept_in_order() {
        let c = Cmdline::parse("console=tty0 console=ttyS0,115200n8");
        assert_eq!(
            c.params(),
            [kv("console", "tty0"), kv("console", "ttyS0,115200n8")]
        );
        assert_eq!(c.render().unwrap(), "console=tty0 console=ttyS0,115200n8");
    }

    #[test]
    fn empty_and_blank_command_lines_have_no_params() {
        for text in ["", " ", "\n", " \t \n ", "--", " -- \n"] {
            let c = Cmdline::parse(text);
            assert!(c.is_empty(), "{text:?}");
            assert_eq!(c.render().unwrap(), "", "{text:?}");
        }
    }

    #[test]
    fn empty_value_differs_from_no_value() {
        let c = Cmdline::parse("cros_secure console= loglevel=7");
        assert_eq!(
            c.params(),
            [flag("cros_secure"), kv("console", ""), kv("loglevel", "7")]
        );
        assert_eq!(c.render().unwrap(), "cros_secure console= loglevel=7");
    }

    #[test]
    fn leading_equals_is_part_of_the_name_as_in_the_kernel() {
        assert_eq!(Cmdline::parse("=x").params(), [flag("=x")]);
        assert_eq!(Cmdline::parse("=a=b").params(), [kv("=a", "b")]);
    }

    #[test]
    fn inner_quotes_stay_and_only_toggle_splitting() {
        // No escapes in the kernel: the quotes in the middle survive, the space between them does not split.
        let c = Cmdline::parse("a=b\"c d\"e f");
        assert_eq!(c.params(), [kv("a", "b\"c d\"e"), flag("f")]);
        assert_eq!(c.render().unwrap(), "a=b\"c d\"e f");
    }

    #[test]
    fn unterminated_quote_swallows_the_rest() {
        let c = Cmdline::parse("quiet foo=\"bar baz -- x");
        assert_eq!(c.params(), [flag("quiet"), kv("foo", "bar baz -- x")]);
        // Rendered with its quote closed: same meaning, and safe to append after.
        assert_eq!(c.render().unwrap(), "quiet foo=\"bar baz -- x\"");
    }

    /// Every distinct `Command line:` in the shared dmesg corpus, verbatim.
    const CORPUS: &[&str] = &[
        "BOOT_IMAGE=(hd2,gpt2)/vmlinuz-5.14.0-570.23.1.el9_6.x86_64 root=/dev/mapper/rl-root ro crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=/dev/mapper/rl-swap rd.lvm.lv=rl/root rd.lvm.lv=rl/swap rhgb quiet\r",
        "BOOT_IMAGE=../vmlinuz-linux-hpe8k root=/dev/sda2 rw l1tf=full,force spec_store_bypass_disable=on spectre_v2=on l1d_flush=on apparmor=1 lsm=lockdown,yama,apparmor lockdown=confidentiality init_on_alloc=1 init_on_free=1 page_alloc.shuffle=1 slab_nomerge vsyscall=none slub_debug=FZP randomize_kstack_offset=1 initrd=../initramfs-linux-hpe8k.img",
        "BOOT_IMAGE=/@/boot/vmlinuz-4.2.0-12-generic.efi.signed root=UUID=0d9c6876-886e-4eb9-b90f-55a85d10509c ro rootflags=subvol=@ quiet splash vt.handoff=7",
        "BOOT_IMAGE=/boot/vmlinuz-4.4.0-121-generic root=UUID=0e31c316-a654-4c36-8e4a-fc53fc98bd21 ro memmap=8G!8G quiet splash vt.handoff=7",
        "BOOT_IMAGE=/boot/vmlinuz-5.4.0-1045-aws root=PARTUUID=5198cbc0-01 ro console=tty1 console=ttyS0 nvme_core.io_timeout=4294967295 panic=-1",
        "BOOT_IMAGE=/casper/vmlinuz.efi file=/cdrom/preseed/ubuntu.seed boot=casper quiet splash ---",
        "BOOT_IMAGE=/vmlinuz-3.6.11-4.fc16.x86_64 root=/dev/mapper/VolGroup-lv_root ro rd.md=0 rd.dm=0 rd.lvm.lv=VolGroup/lv_swap KEYTABLE=us quiet SYSFONT=latarcyrheb-sun16 rhgb rd.lvm.lv=VolGroup/lv_root rd.luks=0 LANG=en_US.UTF-8",
        "\\\\boot\\vmlinuz-4.16.3+ ro root=UUID=864c54c6-961a-4ad9-8c23-35eb8e0f24fb initrd=boot\\initrd.img-4.16.3+",
        "cros_secure console= loglevel=7 console_msg_format=syslog init=/sbin/init cros_secure drm.trace=0x106 root=/dev/dm-0 rootwait ro dm_verity.error_behavior=3 dm_verity.max_bios=-1 dm_verity.dev_wait=1 dm=\"1 vroot none ro 1,0 7946240 verity payload=PARTUUID=ce82c505-7c71-b946-95db-6350c75df7d2/PARTNROFF=1 hashtree=PARTUUID=ce82c505-7c71-b946-95db-6350c75df7d2/PARTNROFF=1 hashstart=7946240 alg=sha256 root_hexdigest=8f1078ad040756805ee23d13c15e204dbd483179a075809a52a57074167f1764 salt=6996cbaafd192f2eb45222a8676d102e40f59ec417f01247f086ddb191c962f8\" noinitrd vt.global_cursor_default=0 kern_guid=ce82c505-7c71-b946-95db-6350c75df7d2 cros_lsb_release_hash=6Bovzvjb9wElS3itUMobOWj3xeen9bO0AlFtPjJduxA= add_efi_memmap noresume i915.modeset=1 i915.enable_guc=3 intel_pmc_core.warn_on_s0ix_failures=1 intel_iommu=on swiotlb=65536 chromeos_pstore.ecc_size=0",
        "cros_secure console= loglevel=7 init=/sbin/init cros_secure drm.trace=0x106 root=/dev/dm-0 rootwait ro dm_verity.error_behavior=3 dm_verity.max_bios=-1 dm_verity.dev_wait=1  noinitrd panic=60 cros_recovery kern_b_hash=de00d655613975824ae0ea15aa6908f75280b0078f6ed5e6eba2d13a5d233cf0 vt.global_cursor_default=0 kern_guid=55925989-77ff-604c-86e8-2f783e782239 add_efi_memmap boot=local noresume noswap i915.modeset=1 ramoops.ecc=1 tpm_tis.force=0 intel_pmc_core.warn_on_s0ix_failures=1 i915.enable_guc=3 i915.enable_dc=4 xdomain=0 swiotlb=65536 intel_iommu=on i915.enable_psr=1 usb-storage.quirks=13fe:6500:u   ",
        "initrd=/initrd.img root=/dev/ram0 quiet SRC= DATA= BOOT_IMAGE=/kernel ",
        "initrd=\\intel-ucode.img initrd=\\initramfs-linux-cachyos-lto.img root=PARTUUID=17f860f8-3c20-40d0-af65-4ca35a6dcd37 rw zswap.enabled=0 nowatchdog iomem=relaxed",
        "panic=-1 console=ttyS0 root=/dev/vda init=/init androidboot.hardware=bertha softlockup_panic=0 androidboot.verifiedbootstate=green rcupdate.rcu_expedited=1 rcutree.kthread_prio=1 ramoops.record_size=262144 ramoops.console_size=262144 ramoops.ftrace_size=4096 ramoops.pmsg_size=4096 ramoops.dump_oops=1 squashfs.cached_blks=20 no-vsti-guest ramoops.mem_address=0x1fb400000 ramoops.mem_size=0x100000",
        "ro root=/dev/mapper/vg_devsv03-lv_root nomodeset rd_NO_LUKS  KEYBOARDTYPE=pc KEYTABLE=us LANG=en_US.UTF-8 rd_LVM_LV=vg_devsv03/lv_swap rd_NO_MD rd_LVM_LV=vg_devsv03/lv_root crashkernel=auto SYSFONT=latarcyrheb-sun16 rd_NO_DM rhgb quiet",
        "root=LABEL=DOROOT ro",
    ];

    #[test]
    fn corpus_command_lines_render_to_the_same_params() {
        for text in CORPUS {
            let parsed = Cmdline::parse(text);
            assert!(!parsed.params().is_empty(), "{text}");
            let rendered = parsed.render().unwrap();
            assert_eq!(Cmdline::parse(&rendered), parsed, "{text}");
            // Nothing in the corpus needs quoting beyond what it had: the text only loses redundant whitespace.
            let normalised: Vec<&str> = text.split_ascii_whitespace().collect();
            assert_eq!(rendered, normalised.join(" "), "{text}");
        }
    }

    #[test]
    fn corpus_chromeos_dm_table_is_one_param() {
        let c = Cmdline::parse(CORPUS[8]);
        let dm = c.get("dm").and_then(Param::value).unwrap();
        assert!(
            dm.starts_with("1 vroot none ro 1,0 7946240 verity payload="),
            "{dm}"
        );
        assert!(
            dm.ends_with("salt=6996cbaafd192f2eb45222a8676d102e40f59ec417f01247f086ddb191c962f8")
        );
        assert_eq!(c.get("noinitrd"), Some(&flag("noinitrd")));
        // Hyphenated and underscored spellings are the same parameter to the kernel.
        assert_eq!(c.get("usb_storage.quirks"), None);
        let android = Cmdline::parse(CORPUS[12]);
        assert_eq!(android.get("no_vsti_guest"), Some(&flag("no-vsti-guest")));
    }

    #[test]
    fn corpus_rhel9_carriage_return_is_whitespace() {
        let c = Cmdline::parse(CORPUS[0]);
        assert_eq!(c.params().last(), Some(&flag("quiet")));
        assert_eq!(
            c.get("crashkernel").and_then(Param::value),
            Some("1G-4G:192M,4G-64G:256M,64G-:512M")
        );
    }

    #[test]
    fn keys_match_treats_dash_and_underscore_alike() {
        assert!(keys_match("cpuhp.parallel", "cpuhp.parallel"));
        assert!(keys_match("nvme_core.io_timeout", "nvme-core.io-timeout"));
        assert!(!keys_match("console", "consol"));
        assert!(!keys_match("quiet", "QUIET"));
    }

    #[test]
    fn remove_drops_every_occurrence_whatever_the_value() {
        let mut c = Cmdline::parse("console=tty0 quiet console=ttyS0,115200n8 console");
        assert_eq!(c.remove("console"), 3);
        assert_eq!(c.render().unwrap(), "quiet");
        assert_eq!(c.remove("console"), 0);
    }

    #[test]
    fn remove_matches_dash_and_underscore() {
        let mut c = Cmdline::parse("nvme_core.io_timeout=4294967295 panic=-1");
        assert_eq!(c.remove("nvme-core.io-timeout"), 1);
        assert_eq!(c.render().unwrap(), "panic=-1");
    }

    /// `text` parsed, each `(key, value)` set in turn, rendered.
    fn after_setting(text: &str, set: &[(&str, &str)]) -> String {
        let mut c = Cmdline::parse(text);
        for (key, value) in set {
            c.set(key, value).unwrap();
        }
        c.render().unwrap()
    }

    #[test]
    fn set_replaces_first_in_place_and_drops_the_rest() {
        assert_eq!(
            after_setting(
                "console=tty0 ro console=ttyS0,115200n8 quiet",
                &[("console", "ttyS1")]
            ),
            "console=ttyS1 ro quiet"
        );
    }

    #[test]
    fn set_appends_when_absent_and_quotes_spaces() {
        let set = [("cpuhp.parallel", "1"), ("dyndbg", "file kexec.c +p")];
        assert_eq!(
            after_setting("ro quiet -- single", &set),
            "ro quiet cpuhp.parallel=1 dyndbg=\"file kexec.c +p\" -- single"
        );
    }

    #[test]
    fn set_replaces_a_bare_flag_and_takes_the_new_spelling() {
        assert_eq!(
            after_setting("a cpuhp_parallel b", &[("cpuhp-parallel", "0")]),
            "a cpuhp-parallel=0 b"
        );
    }

    #[test]
    fn set_refuses_what_cannot_be_written() {
        let mut c = Cmdline::default();
        for key in ["a b", "a=b", "", "--"] {
            assert!(
                matches!(c.set(key, "1"), Err(CmdlineError::InvalidKey { .. })),
                "{key:?}"
            );
        }
        assert!(matches!(
            c.set("x", "a\"b c"),
            Err(CmdlineError::Unrepresentable { .. })
        ));
        assert!(c.is_empty());
    }

    #[test]
    fn set_accepts_a_quote_that_reads_back_unchanged() {
        let mut c = Cmdline::default();
        c.set("x", "a\"b\"").unwrap();
        assert_eq!(Cmdline::parse(&c.render().unwrap()), c);
    }

    #[test]
    fn append_adds_verbatim_unless_present_exactly() {
        let mut c = Cmdline::parse("quiet mitigations=auto");
        assert!(c.append("nosmt").unwrap());
        assert!(!c.append("nosmt").unwrap());
        assert!(!c.append("quiet").unwrap());
        assert!(c.append("mitigations=off").unwrap());
        assert!(!c.append("mitigations=auto").unwrap());
        assert!(c.append("dyndbg=\"file x.c +p\"").unwrap());
        assert_eq!(
            c.render().unwrap(),
            "quiet mitigations=auto nosmt mitigations=off dyndbg=\"file x.c +p\""
        );
    }

    #[test]
    fn append_refuses_more_or_less_than_one_param() {
        let mut c = Cmdline::default();
        for text in ["", "  ", "a b", "--", "a --", "-- a", "\"--\""] {
            let result = c.append(text);
            assert!(result.is_err(), "{text:?} gave {result:?}");
        }
        assert!(c.is_empty());
    }

    #[test]
    fn edit_applies_inherit_remove_set_append_in_order() {
        let running = Cmdline::parse(
            "BOOT_IMAGE=/boot/vmlinuz-6.1.0-18-amd64 root=UUID=0b6a4c2e ro quiet splash console=tty0 -- single\n",
        );
        let edit = CmdlineEdit {
            inherit: true,
            remove: vec!["quiet".into(), "splash".into(), "console".into()],
            set: vec![
                ("console".into(), "ttyS0,115200n8".into()),
                ("cpuhp.parallel".into(), "1".into()),
            ],
            append: vec!["nosmt".into(), "ro".into()],
        };
        assert!(edit.validate().is_empty());
        let new = edit.apply(&running).unwrap();
        assert_eq!(
            new.render().unwrap(),
            "BOOT_IMAGE=/boot/vmlinuz-6.1.0-18-amd64 root=UUID=0b6a4c2e ro console=ttyS0,115200n8 \
             cpuhp.parallel=1 nosmt -- single"
        );
    }

    #[test]
    fn edit_without_inherit_starts_empty() {
        let running = Cmdline::parse("root=/dev/sda1 quiet -- single");
        let edit = CmdlineEdit {
            inherit: false,
            remove: vec!["quiet".into()],
            set: vec![("root".into(), "/dev/nvme0n1".into())],
            append: vec!["console=ttyS0".into()],
        };
        assert_eq!(
            edit.apply(&running).unwrap().render().unwrap(),
            "root=/dev/nvme0n1 console=ttyS0"
        );
    }

    #[test]
    fn edit_validate_reports_every_problem() {
        let edit = CmdlineEdit {
            inherit: true,
            remove: vec!["ok".into(), "bad key".into()],
            set: vec![("k=v".into(), "1".into()), ("x".into(), "a\"b c".into())],
            append: vec!["two params".into()],
        };
        let errors = edit.validate();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(edit.apply(&Cmdline::default()).is_err());
        let message = errors[0].to_string();
        assert!(
            message.contains("\"bad key\"") && message.contains("whitespace"),
            "{message}"
        );
    }

    #[test]
    fn render_refuses_a_param_that_would_change_meaning() {
        // `"a""` parses to the name `a"`. As the last word it can be written back; followed by anything its open
        // quote would swallow the rest, and no spelling avoids that.
        let mut c = Cmdline::parse("\"a\"\"");
        assert_eq!(c.params(), [flag("a\"")]);
        assert_eq!(Cmdline::parse(&c.render().unwrap()), c);
        c.append("nosmt").unwrap();
        assert!(matches!(
            c.render(),
            Err(CmdlineError::Unrepresentable { .. })
        ));
        // Display still shows something readable.
        assert_eq!(c.to_string(), "a\" nosmt");
    }

    #[test]
    fn display_matches_render() {
        let c = Cmdline::parse("a=\"b c\" d -- e");
        assert_eq!(c.to_string(), c.render().unwrap());
        assert_eq!(kv("a", "b c").to_string(), "a=\"b c\"");
        assert_eq!(flag("").to_string(), "\"\"");
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_.-]{1,12}".prop_filter("-- is the separator", |k| k != "--")
    }

    fn value_strategy() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[a-zA-Z0-9 =,:/*+.!@\\-\tä]{0,16}")
    }

    fn param_strategy() -> impl Strategy<Value = Param> {
        (key_strategy(), value_strategy()).prop_map(|(key, value)| Param { key, value })
    }

    fn cmdline_strategy() -> impl Strategy<Value = Cmdline> {
        (
            proptest::collection::vec(param_strategy(), 0..10),
            proptest::collection::vec(param_strategy(), 0..4),
        )
            .prop_map(|(params, init_args)| Cmdline { params, init_args })
    }

    proptest! {
        #[test]
        fn parse_of_render_is_identity(model in cmdline_strategy()) {
            let text = model.render().expect("generated params are representable");
            prop_assert_eq!(Cmdline::parse(&text), model);
        }

        #[test]
        fn parsing_any_text_never_panics(text in any::<String>()) {
            let _ = Cmdline::parse(&text).to_string();
        }

        /// Text made mostly of the characters the parser treats specially: whatever it parses to either renders
        /// to text that parses back the same, or is refused. Never silently different.
        #[test]
        fn rendering_parsed_text_is_faithful_or_refused(text in "[ab\"= \t-]{0,24}") {
            let parsed = Cmdline::parse(&text);
            if let Ok(rendered) = parsed.render() {
                prop_assert_eq!(Cmdline::parse(&rendered), parsed);
            }
        }

        #[test]
        fn edits_render_faithfully(
            base in cmdline_strategy(),
            remove in proptest::collection::vec(key_strategy(), 0..3),
            set in proptest::collection::vec((key_strategy(), "[a-z0-9 ,]{0,8}"), 0..3),
            append in proptest::collection::vec(param_strategy(), 0..3),
        ) {
            let edit = CmdlineEdit {
                inherit: true,
                remove: remove.clone(),
                set: set.clone(),
                append: append.iter().map(|p| p.render_token(false).unwrap()).collect(),
            };
            let new = edit.apply(&base).unwrap();
            for key in &remove {
                let set_again = set.iter().any(|(k, _)| keys_match(k, key));
                let appended = append.iter().any(|p| keys_match(&p.key, key));
                prop_assert!(set_again || appended || !new.contains_key(key));
            }
            for (key, _) in &set {
                prop_assert!(new.get_all(key).count() >= 1);
            }
            prop_assert_eq!(Cmdline::parse(&new.render().unwrap()), new);
        }
    }
}
