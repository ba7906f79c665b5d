//! The Rhai sandbox behind the `filter`, `script` and `set_header` steps.
//!
//! A route's scripts are compiled once, when the route file is loaded, against a
//! [`ScriptEngine`] built from the route's [`ScriptLimits`]. The engine is shared by every
//! task that runs the route; all per-message state (the message itself, the drop request, the
//! deadline) lives in the call, never in the engine.
//!
//! Scripts see three variables: `body` (the JSON body as Rhai maps, arrays, strings, numbers),
//! `headers` (a map of strings) and `meta` (a map). A `script` step may assign to all three and
//! may call `drop()` to drop the message; `filter` and `set_header` are expressions that only
//! read them.
//!
//! Invariant: a script can never exceed its limits (operations, call depth, expression depth,
//! string/array/map sizes, variables) nor run longer than `timeout_ms` of wall-clock time (checked
//! between operations, every [`DEADLINE_CHECK_EVERY`] operations); it cannot read files, open
//! sockets, `eval` code or `import` modules. Whatever a script does, it yields a value or a
//! [`ScriptError`]: it never panics the worker that runs it, and never overflows its stack (a
//! script runs on a stack big enough for its limits, see [`ScriptLimits::stack_bytes`]).
//!
//! Not covered by the limits: turning the message into Rhai values before the run and back
//! afterwards, which is linear in the size of the body.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::module_resolvers::DummyModuleResolver;
use rhai::packages::{Package, StandardPackage};
use rhai::{AST, Dynamic, Engine, EvalAltResult, ParseError, ParseErrorType, Position, Scope};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

/// Stack a script may need per call level and per level of expression nesting. Rhai evaluates
/// by recursion. Measured on x86-64 with the default limits and the worst nesting shapes found
/// (deep `switch`, nested calls), scripts needed up to 16 MiB unoptimised and under 1 MiB in a
/// release build; these figures give 2–4 times that.
const STACK_PER_LEVEL: usize = if cfg!(debug_assertions) {
    16 * 1024
} else {
    2 * 1024
};
/// Expression depth assumed for the stack budget when `max_expr_depth` is 0 (unlimited).
const UNLIMITED_EXPR_DEPTH_BUDGET: usize = 256;
/// Lower and upper bounds of the stack budget.
const STACK_BUDGET_RANGE: (usize, usize) = (1024 * 1024, 512 * 1024 * 1024);

/// How often (in Rhai operations) the wall-clock deadline is checked. Reading the clock costs
/// about as much as a few operations, so checking every one would slow scripts down noticeably.
const DEADLINE_CHECK_EVERY: u64 = 256;

/// Resource limits for the scripts of one route (route file key `script_limits:`).
///
/// Every script, filter and `set_header` expression of the route runs under these limits. A
/// script that hits one fails with a limit error; the message then follows the route's error
/// handling (retry, dead letter) like any other step failure.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ScriptLimits {
    /// Maximum number of Rhai operations (expressions evaluated, loop iterations, calls) one run
    /// may perform. Stops endless loops. 0 means unlimited. Default: 1000000.
    pub max_operations: u64,
    /// Maximum depth of nested function calls (stops runaway recursion). 0 forbids calling
    /// script-defined functions. Default: 32.
    pub max_call_levels: usize,
    /// Maximum nesting depth of expressions, checked when the script is compiled (also applied
    /// to the bodies of functions the script defines). 0 means unlimited. Default: 64.
    pub max_expr_depth: usize,
    /// Maximum length of a string a script may build, in bytes. 0 means unlimited.
    /// Default: 1048576 (1 MiB).
    pub max_string_size: usize,
    /// Maximum number of elements of an array a script may build. 0 means unlimited.
    /// Default: 100000.
    pub max_array_size: usize,
    /// Maximum number of entries of an object map a script may build. 0 means unlimited.
    /// Default: 100000.
    pub max_map_size: usize,
    /// Maximum number of variables in scope at the same time, counting `body`, `headers` and
    /// `meta`. Default: 1000.
    pub max_variables: usize,
    /// Maximum number of functions one script may define with `fn`. 0 forbids defining
    /// functions. Default: 100.
    pub max_functions: usize,
    /// Wall-clock deadline for one run, in milliseconds. The clock is checked between
    /// operations, so a single long native call (sorting a huge array, say) can overrun it a
    /// little. 0 means no deadline. Default: 1000.
    pub timeout_ms: u64,
}

impl ScriptLimits {
    /// Stack, in bytes, that compiling or running a script under these limits may need (about
    /// 4 MiB for the defaults in a release build). A thread with less than that left runs each
    /// script on a freshly allocated stack, which costs about 17 µs per run; give the worker
    /// threads that run scripts at least this much (tokio's `thread_stack_size`) to avoid it.
    pub fn stack_bytes(&self) -> usize {
        let depth = match self.max_expr_depth {
            0 => UNLIMITED_EXPR_DEPTH_BUDGET,
            depth => depth,
        };
        let (min, max) = STACK_BUDGET_RANGE;
        self.max_call_levels
            .saturating_add(1)
            .saturating_mul(depth)
            .saturating_mul(STACK_PER_LEVEL)
            .clamp(min, max)
    }
}

impl Default for ScriptLimits {
    fn default() -> Self {
        Self {
            max_operations: 1_000_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_string_size: 1024 * 1024,
            max_array_size: 100_000,
            max_map_size: 100_000,
            max_variables: 1_000,
            max_functions: 100,
            timeout_ms: 1_000,
        }
    }
}

/// How a source text is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptKind {
    /// A block of statements (the `script` step): assignments, `let`, loops, `fn`, `drop()`.
    Statements,
    /// A single expression (`filter`, `set_header`): no assignments and no statements.
    Expression,
}

/// What a script error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptErrorKind {
    /// The source does not compile (including misspelled variable names).
    Syntax,
    /// The script compiled but failed while running (missing property, wrong type, `throw` …),
    /// or its result could not be turned back into a message.
    Runtime,
    /// The script hit one of its [`ScriptLimits`]: operations, sizes, depth, variables or the
    /// wall-clock deadline.
    Limit,
}

/// A script that failed to compile or to run, with the place in the source where Rhai knows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ScriptError {
    /// What went wrong, without the position.
    pub message: String,
    /// 1-based line in the script source.
    pub line: Option<usize>,
    /// 1-based column in the script source.
    pub column: Option<usize>,
    /// The class of failure.
    pub kind: ScriptErrorKind,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "line {line}, column {column}: ")?,
            (Some(line), None) => write!(f, "line {line}: ")?,
            _ => {}
        }
        f.write_str(&self.message)
    }
}

impl ScriptError {
    fn new(kind: ScriptErrorKind, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            line: None,
            column: None,
            kind,
        }
    }

    fn at(mut self, pos: Position) -> Self {
        self.line = pos.line();
        self.column = pos.position();
        self
    }

    fn from_parse(err: &ParseError) -> Self {
        let kind = match err.err_type() {
            ParseErrorType::ExprTooDeep
            | ParseErrorType::TooManyFunctions
            | ParseErrorType::LiteralTooLarge(..) => ScriptErrorKind::Limit,
            _ => ScriptErrorKind::Syntax,
        };
        Self::new(kind, err.err_type().to_string()).at(err.position())
    }

    /// Turns a Rhai runtime error into ours. Errors raised inside script-defined functions come
    /// wrapped once per call level; the innermost one says what failed and where, the wrappers
    /// say through which functions it was reached.
    fn from_eval(err: EvalAltResult) -> Self {
        let mut calls = Vec::new();
        let mut inner = err;
        while let EvalAltResult::ErrorInFunctionCall(name, _, next, _) = inner {
            calls.push(name);
            inner = *next;
        }
        let pos = inner.take_position();
        let kind = match inner {
            EvalAltResult::ErrorTooManyOperations(..)
            | EvalAltResult::ErrorTooManyVariables(..)
            | EvalAltResult::ErrorTooManyModules(..)
            | EvalAltResult::ErrorStackOverflow(..)
            | EvalAltResult::ErrorDataTooLarge(..)
            | EvalAltResult::ErrorTerminated(..) => ScriptErrorKind::Limit,
            EvalAltResult::ErrorParsing(..) => ScriptErrorKind::Syntax,
            _ => ScriptErrorKind::Runtime,
        };
        let mut message = match inner {
            EvalAltResult::ErrorTerminated(token, _) if token.is::<DeadlinePassed>() => {
                "script ran longer than its timeout_ms limit".to_string()
            }
            EvalAltResult::ErrorTooManyOperations(..) => {
                "Too many operations (max_operations limit)".to_string()
            }
            EvalAltResult::ErrorStackOverflow(..) => {
                "Stack overflow: functions nested deeper than max_call_levels".to_string()
            }
            _ => inner.to_string(),
        };
        for name in calls {
            message.push_str(&format!(" (in call to function '{name}')"));
        }
        Self::new(kind, message).at(pos)
    }
}

/// The parts of a message a script can see and change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScriptMessage {
    /// The parsed body.
    pub body: Value,
    /// Message headers; always strings.
    pub headers: BTreeMap<String, String>,
    /// Message metadata (route, source, received time, attempt …) plus anything scripts add.
    pub meta: serde_json::Map<String, Value>,
}

/// A read-only view of a message for expressions (`filter`, `set_header`):
/// borrows instead of copying, since an expression cannot change the message.
#[derive(Debug, Clone, Copy)]
pub struct ScriptInput<'a> {
    pub body: &'a Value,
    pub headers: &'a BTreeMap<String, String>,
    pub meta: &'a serde_json::Map<String, Value>,
}

impl<'a> From<&'a ScriptMessage> for ScriptInput<'a> {
    fn from(m: &'a ScriptMessage) -> Self {
        ScriptInput {
            body: &m.body,
            headers: &m.headers,
            meta: &m.meta,
        }
    }
}

/// What a `script` step decided about the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The script finished; the message goes on with the changes it made.
    Continue,
    /// The script called `drop()`: the message is dropped (and acknowledged), its changes
    /// discarded.
    Dropped,
}

/// A compiled script or expression, ready to run many times from any task.
#[derive(Debug, Clone)]
pub struct CompiledScript {
    ast: Arc<AST>,
}

/// A sandboxed Rhai engine configured with one set of [`ScriptLimits`].
///
/// Cheap to clone and shareable between threads; scripts must be run by the engine that
/// compiled them.
#[derive(Clone)]
pub struct ScriptEngine {
    engine: Arc<Engine>,
    timeout: Option<Duration>,
    /// Stack (bytes) that compiling or running one script may need, see [`STACK_PER_LEVEL`].
    stack_budget: usize,
}

impl fmt::Debug for ScriptEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptEngine")
            .field("timeout", &self.timeout)
            .field("stack_budget", &self.stack_budget)
            .finish_non_exhaustive()
    }
}

/// The termination token `drop()` raises. Rhai cannot catch termination (`try`/`catch` does not
/// see it), so `drop()` ends the script at once, wherever it is called from.
#[derive(Debug, Clone, Copy)]
struct DropRequested;

/// The termination token raised when a run passes its deadline.
#[derive(Debug, Clone, Copy)]
struct DeadlinePassed;

thread_local! {
    /// Deadline of the run in progress on this thread. Rhai's progress callback belongs to the
    /// shared engine and gets no per-run context, but a run never leaves the thread that started
    /// it, so a thread-local is exactly per run.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Sets this thread's deadline for the lifetime of the guard and restores the previous one
/// afterwards (also when unwinding).
struct DeadlineGuard(Option<Instant>);

impl DeadlineGuard {
    fn start(timeout: Option<Duration>) -> Self {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        Self(DEADLINE.with(|d| d.replace(deadline)))
    }
}

impl Drop for DeadlineGuard {
    fn drop(&mut self) {
        DEADLINE.with(|d| d.set(self.0));
    }
}

const VARIABLES: [&str; 3] = ["body", "headers", "meta"];

impl ScriptEngine {
    /// Builds a sandboxed engine: Rhai's standard library only (no file, network or process
    /// access exists in it), no module resolver, `eval` disabled, every limit set.
    pub fn new(limits: &ScriptLimits) -> Self {
        let mut engine = Engine::new_raw();
        engine.register_global_module(StandardPackage::new().as_shared_module());
        engine.set_module_resolver(DummyModuleResolver::new());
        engine.set_max_modules(0);
        engine.disable_symbol("eval");
        engine.disable_symbol("import");
        engine.set_strict_variables(true);
        // Rhai's optimiser takes time exponential in the nesting of `switch` expressions
        // (18 levels: over a second per compile); route scripts gain little from constant
        // folding, so compiling stays linear instead.
        engine.set_optimization_level(rhai::OptimizationLevel::None);

        engine.set_max_operations(limits.max_operations);
        engine.set_max_call_levels(limits.max_call_levels);
        engine.set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth);
        engine.set_max_string_size(limits.max_string_size);
        engine.set_max_array_size(limits.max_array_size);
        engine.set_max_map_size(limits.max_map_size);
        engine.set_max_variables(limits.max_variables);
        engine.set_max_functions(limits.max_functions);

        engine.on_progress(|ops| {
            if ops % DEADLINE_CHECK_EVERY != 0 {
                return None;
            }
            let deadline = DEADLINE.with(Cell::get)?;
            (Instant::now() >= deadline).then(|| Dynamic::from(DeadlinePassed))
        });
        engine.register_fn("drop", || -> Result<(), Box<EvalAltResult>> {
            Err(EvalAltResult::ErrorTerminated(Dynamic::from(DropRequested), Position::NONE).into())
        });

        Self {
            engine: Arc::new(engine),
            timeout: (limits.timeout_ms > 0).then(|| Duration::from_millis(limits.timeout_ms)),
            stack_budget: limits.stack_bytes(),
        }
    }

    /// Runs `f` with at least the stack budget available: directly when the current thread has
    /// that much left, otherwise on a freshly allocated stack segment (about 17 µs per run). A
    /// tokio worker has 2 MiB, which the default limits can exhaust; without this a deeply
    /// recursive script would abort the whole process instead of hitting its limit.
    fn with_stack<R>(&self, f: impl FnOnce() -> R) -> R {
        stacker::maybe_grow(self.stack_budget, self.stack_budget, f)
    }

    /// Compiles a source once. Variables other than `body`, `headers`, `meta` and the script's
    /// own `let`s are rejected here, so a typo fails when the route is loaded.
    pub fn compile(&self, source: &str, kind: ScriptKind) -> Result<CompiledScript, ScriptError> {
        let mut scope = Scope::new();
        for name in VARIABLES {
            scope.push_dynamic(name, Dynamic::UNIT);
        }
        let ast = self
            .with_stack(|| match kind {
                ScriptKind::Statements => self.engine.compile_with_scope(&scope, source),
                ScriptKind::Expression => self.engine.compile_expression_with_scope(&scope, source),
            })
            .map_err(|e| ScriptError::from_parse(&e))?;
        Ok(CompiledScript { ast: Arc::new(ast) })
    }

    /// Runs a `script` step. On [`RunOutcome::Continue`] the message holds whatever the script
    /// assigned to `body`, `headers` and `meta`; on [`RunOutcome::Dropped`] or on error it is
    /// left untouched.
    pub fn run(
        &self,
        script: &CompiledScript,
        msg: &mut ScriptMessage,
    ) -> Result<RunOutcome, ScriptError> {
        let mut scope = message_scope(ScriptInput::from(&*msg))?;
        match self.eval(&mut scope, script) {
            Ok(_) => {}
            Err(Evaluation::Dropped) => return Ok(RunOutcome::Dropped),
            Err(Evaluation::Failed(e)) => return Err(e),
        }
        let body = take_var(&mut scope, "body")?;
        let headers = take_var(&mut scope, "headers")?;
        let meta = take_var(&mut scope, "meta")?;

        let body = dynamic_to_json(&body, "`body`")?;
        let headers = headers_from_dynamic(headers)?;
        let meta = match dynamic_to_json(&meta, "`meta`")? {
            Value::Object(map) => map,
            other => {
                return Err(ScriptError::new(
                    ScriptErrorKind::Runtime,
                    format!(
                        "`meta` must stay a map, but the script set it to {}",
                        json_type(&other)
                    ),
                ));
            }
        };
        msg.body = preserve_key_order(&msg.body, body);
        msg.headers = headers;
        msg.meta = meta;
        Ok(RunOutcome::Continue)
    }

    /// Evaluates a filter. Anything but a boolean is an error naming the type it got; `drop()`
    /// inside a filter counts as `false`.
    pub fn eval_bool<'a>(
        &self,
        script: &CompiledScript,
        msg: impl Into<ScriptInput<'a>>,
    ) -> Result<bool, ScriptError> {
        let mut scope = message_scope(msg.into())?;
        match self.eval(&mut scope, script) {
            Ok(value) => value.as_bool().map_err(|type_name| {
                ScriptError::new(
                    ScriptErrorKind::Runtime,
                    format!("a filter must evaluate to true or false, but this one gave a value of type {type_name}"),
                )
            }),
            Err(Evaluation::Dropped) => Ok(false),
            Err(Evaluation::Failed(e)) => Err(e),
        }
    }

    /// Evaluates an expression to a JSON value (`set_header` turns it into a string).
    pub fn eval_value<'a>(
        &self,
        script: &CompiledScript,
        msg: impl Into<ScriptInput<'a>>,
    ) -> Result<Value, ScriptError> {
        let mut scope = message_scope(msg.into())?;
        match self.eval(&mut scope, script) {
            Ok(value) => dynamic_to_json(&value, "the expression's result"),
            Err(Evaluation::Dropped) => Err(ScriptError::new(
                ScriptErrorKind::Runtime,
                "drop() can only be used in a script or filter step",
            )),
            Err(Evaluation::Failed(e)) => Err(e),
        }
    }

    fn eval(&self, scope: &mut Scope, script: &CompiledScript) -> Result<Dynamic, Evaluation> {
        let _deadline = DeadlineGuard::start(self.timeout);
        self.with_stack(|| {
            self.engine
                .eval_ast_with_scope::<Dynamic>(scope, &script.ast)
        })
        .map_err(|e| match e.unwrap_inner() {
            EvalAltResult::ErrorTerminated(token, _) if token.is::<DropRequested>() => {
                Evaluation::Dropped
            }
            _ => Evaluation::Failed(ScriptError::from_eval(*e)),
        })
    }
}

/// Why an evaluation did not produce a value.
enum Evaluation {
    Dropped,
    Failed(ScriptError),
}

fn message_scope(msg: ScriptInput) -> Result<Scope<'static>, ScriptError> {
    let headers: rhai::Map = msg
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().into(), Dynamic::from(v.clone())))
        .collect();
    let mut scope = Scope::new();
    scope.push_dynamic("body", json_to_dynamic(msg.body, "body")?);
    scope.push_dynamic("headers", Dynamic::from_map(headers));
    scope.push_dynamic("meta", json_to_dynamic(msg.meta, "meta")?);
    Ok(scope)
}

fn json_to_dynamic<T: serde::Serialize>(value: &T, what: &str) -> Result<Dynamic, ScriptError> {
    rhai::serde::to_dynamic(value).map_err(|e| {
        ScriptError::new(
            ScriptErrorKind::Runtime,
            format!("cannot hand `{what}` to the script: {e}"),
        )
    })
}

/// Takes the latest variable of that name: a script that shadows `body` with `let body = …`
/// means the new one.
fn take_var(scope: &mut Scope, name: &str) -> Result<Dynamic, ScriptError> {
    scope
        .remove::<Dynamic>(name)
        .map(Dynamic::flatten)
        .ok_or_else(|| {
            ScriptError::new(
                ScriptErrorKind::Runtime,
                format!("the variable `{name}` disappeared from the script's scope"),
            )
        })
}

fn dynamic_to_json(value: &Dynamic, what: &str) -> Result<Value, ScriptError> {
    rhai::serde::from_dynamic::<Value>(value).map_err(|e| {
        ScriptError::new(
            ScriptErrorKind::Runtime,
            format!(
                "{what} holds a value of type {}, which cannot be turned into JSON: {e}",
                value.type_name()
            ),
        )
    })
}

/// Headers must come back as strings. Numbers, booleans and characters are written as Rhai
/// prints them; anything else is an error naming the header.
fn headers_from_dynamic(value: Dynamic) -> Result<BTreeMap<String, String>, ScriptError> {
    let type_name = value.type_name();
    let map = value.try_cast::<rhai::Map>().ok_or_else(|| {
        let message = format!(
            "`headers` must stay a map of strings, but the script set it to a value of type {type_name}"
        );
        ScriptError::new(ScriptErrorKind::Runtime, message)
    })?;
    map.into_iter()
        .map(|(name, value)| {
            let value = value.flatten();
            let printable = value.is_string()
                || value.is_int()
                || value.is_float()
                || value.is_bool()
                || value.is_char();
            if printable {
                return Ok((name.to_string(), value.to_string()));
            }
            let message = format!(
                "header `{name}` must be a string, number or bool, but the script set it to a value of type {}",
                value.type_name()
            );
            Err(ScriptError::new(ScriptErrorKind::Runtime, message))
        })
        .collect()
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a map",
    }
}

/// Rhai maps are sorted by key, so a body that went through a script comes back with sorted
/// keys. This puts the keys that existed before back in their original order (recursively,
/// matching array elements by index) and appends new keys after them in sorted order.
fn preserve_key_order(original: &Value, changed: Value) -> Value {
    match (original, changed) {
        (Value::Object(before), Value::Object(mut after)) => {
            let mut ordered = serde_json::Map::with_capacity(after.len());
            for (key, old) in before {
                // `remove` perturbs the order of what is left; the rest is sorted below anyway.
                if let Some(new) = after.remove(key) {
                    ordered.insert(key.clone(), preserve_key_order(old, new));
                }
            }
            let mut added: Vec<(String, Value)> = after.into_iter().collect();
            added.sort_by(|a, b| a.0.cmp(&b.0));
            ordered.extend(added);
            Value::Object(ordered)
        }
        (Value::Array(before), Value::Array(after)) => Value::Array(
            after
                .into_iter()
                .enumerate()
                .map(|(i, new)| match before.get(i) {
                    Some(old) => preserve_key_order(old, new),
                    None => new,
                })
                .collect(),
        ),
        (_, changed) => changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn engine() -> ScriptEngine {
        ScriptEngine::new(&ScriptLimits::default())
    }

    fn message(body: Value) -> ScriptMessage {
        ScriptMessage {
            body,
            ..ScriptMessage::default()
        }
    }

    fn filter(source: &str, body: Value) -> Result<bool, ScriptError> {
        let engine = engine();
        let compiled = engine.compile(source, ScriptKind::Expression)?;
        engine.eval_bool(&compiled, &message(body))
    }

    fn run(source: &str, msg: &mut ScriptMessage) -> Result<RunOutcome, ScriptError> {
        let engine = engine();
        let compiled = engine.compile(source, ScriptKind::Statements)?;
        engine.run(&compiled, msg)
    }

    fn run_err(limits: &ScriptLimits, source: &str) -> ScriptError {
        let engine = ScriptEngine::new(limits);
        let compiled = engine
            .compile(source, ScriptKind::Statements)
            .expect("test script compiles");
        engine
            .run(&compiled, &mut message(json!({})))
            .expect_err("test script must fail")
    }

    #[test]
    fn filter_is_true_or_false() {
        let body = json!({"order": {"total": 25.5, "country": "CH"}});
        assert_eq!(filter("body.order.total >= 10.0", body.clone()), Ok(true));
        assert_eq!(filter(r#"body.order.country == "DE""#, body), Ok(false));
    }

    #[test]
    fn integer_json_numbers_compare_with_float_literals() {
        assert_eq!(
            filter("body.order.total >= 10.0", json!({"order": {"total": 10}})),
            Ok(true)
        );
        assert_eq!(
            filter("body.order.total >= 10.0", json!({"order": {"total": 9}})),
            Ok(false)
        );
        assert_eq!(
            filter("body.order.total > 10", json!({"order": {"total": 10.5}})),
            Ok(true)
        );
        assert_eq!(filter("body.n == 1.0", json!({"n": 1})), Ok(true));
    }

    #[test]
    fn filter_that_is_not_a_bool_names_the_type() {
        let err = filter("body.order.total", json!({"order": {"total": 3}})).unwrap_err();
        assert_eq!(err.kind, ScriptErrorKind::Runtime);
        assert!(err.message.contains("i64"), "{err}");
    }

    #[test]
    fn expressions_cannot_assign() {
        let err = engine()
            .compile("body.x = 1", ScriptKind::Expression)
            .unwrap_err();
        assert_eq!(err.kind, ScriptErrorKind::Syntax);
    }

    #[test]
    fn script_modifies_a_nested_field_and_keeps_key_order() {
        let mut msg = message(
            json!({"order": {"total": 1500, "id": "A1", "lines": [{"sku": "x", "qty": 2}]}, "customer": "c"}),
        );
        let source = r#"
            body.order.priority = if body.order.total > 1000 { "high" } else { "normal" };
            body.order.lines[0].qty += 1;
        "#;
        assert_eq!(run(source, &mut msg), Ok(RunOutcome::Continue));
        assert_eq!(
            serde_json::to_string(&msg.body).expect("serializes"),
            r#"{"order":{"total":1500,"id":"A1","lines":[{"sku":"x","qty":3}],"priority":"high"},"customer":"c"}"#
        );
    }

    #[test]
    fn key_order_is_restored_recursively_and_new_keys_are_sorted_after() {
        let before = json!({"z": 1, "a": {"y": 1, "b": 2}, "m": [{"k2": 1, "k1": 2}]});
        let after = json!({"a": {"b": 2, "new": 0, "y": 1}, "m": [{"k1": 2, "k2": 1}, {"q": 1}], "c": 3, "b": 4});
        let ordered = preserve_key_order(&before, after);
        assert_eq!(
            serde_json::to_string(&ordered).expect("serializes"),
            r#"{"a":{"y":1,"b":2,"new":0},"m":[{"k2":1,"k1":2},{"q":1}],"b":4,"c":3}"#
        );
    }

    #[test]
    fn script_sets_headers_and_meta() {
        let mut msg = message(json!({"id": 7}));
        msg.headers.insert("keep".into(), "yes".into());
        let source = r#"
            headers["order-id"] = body.id;
            headers.flag = true;
            headers.name = "n";
            meta.seen = 1;
        "#;
        assert_eq!(run(source, &mut msg), Ok(RunOutcome::Continue));
        let expected: BTreeMap<String, String> = [
            ("flag", "true"),
            ("keep", "yes"),
            ("name", "n"),
            ("order-id", "7"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(msg.headers, expected);
        assert_eq!(msg.meta.get("seen"), Some(&json!(1)));
    }

    #[test]
    fn header_set_to_a_map_is_an_error_naming_the_header() {
        let mut msg = message(json!({}));
        let err = run("headers.bad = #{a: 1};", &mut msg).unwrap_err();
        assert_eq!(err.kind, ScriptErrorKind::Runtime);
        assert!(err.message.contains("`bad`"), "{err}");
        assert!(
            msg.headers.is_empty(),
            "a failed script leaves the message alone"
        );
    }

    #[test]
    fn drop_marks_the_message_dropped_and_discards_changes() {
        let mut msg = message(json!({"a": 1}));
        assert_eq!(
            run("body.a = 2; drop(); body.a = 3;", &mut msg),
            Ok(RunOutcome::Dropped)
        );
        assert_eq!(msg.body, json!({"a": 1}));
        let nested =
            "fn reject(x) { if x > 0 { drop() } } try { reject(body.a) } catch { } body.a = 5;";
        assert_eq!(
            run(nested, &mut msg),
            Ok(RunOutcome::Dropped),
            "drop() cannot be caught"
        );
        assert_eq!(
            run("if body.a > 5 { drop() }", &mut msg),
            Ok(RunOutcome::Continue)
        );
    }

    #[test]
    fn drop_in_a_filter_counts_as_false() {
        assert_eq!(
            filter("if body.a == 1 { drop() } else { true }", json!({"a": 1})),
            Ok(false)
        );
    }

    #[test]
    fn runtime_error_reports_line_and_column() {
        let mut msg = message(json!({"order": {}}));
        let err = run("let x = 1;\nlet y = body.order.total + x;\n", &mut msg).unwrap_err();
        assert_eq!(err.kind, ScriptErrorKind::Runtime);
        assert_eq!(err.line, Some(2));
        assert!(err.column.is_some());
        assert!(err.to_string().starts_with("line 2, column "), "{err}");
    }

    #[test]
    fn error_inside_a_function_points_into_the_function() {
        let mut msg = message(json!({}));
        let err = run("fn f() {\n  throw \"boom\";\n}\nf();", &mut msg).unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(
            err.message.contains("boom") && err.message.contains("'f'"),
            "{err}"
        );
    }

    #[test]
    fn misspelled_variable_fails_at_compile_time() {
        let err = engine()
            .compile("let total = 1;\nlet x = bdy.order;", ScriptKind::Statements)
            .unwrap_err();
        assert_eq!(err.kind, ScriptErrorKind::Syntax);
        assert_eq!((err.line, err.column), (Some(2), Some(9)));
        assert!(err.to_string().starts_with("line 2, column 9: "), "{err}");
        assert!(err.message.contains("bdy"), "{err}");
        let err = engine()
            .compile("bdy.x > 1", ScriptKind::Expression)
            .unwrap_err();
        assert_eq!(err.kind, ScriptErrorKind::Syntax);
    }

    #[test]
    fn endless_loops_stop_at_the_operation_limit_quickly() {
        for source in [
            "loop {}",
            "while true {}",
            "let i = 0; while i >= 0 { i += 1; }",
        ] {
            let started = Instant::now();
            let err = run_err(&ScriptLimits::default(), source);
            assert_eq!(err.kind, ScriptErrorKind::Limit, "{source}: {err}");
            assert!(err.message.contains("operations"), "{err}");
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{source} took {:?}",
                started.elapsed()
            );
        }
    }

    #[test]
    fn wall_clock_deadline_stops_a_script_without_an_operation_limit() {
        let limits = ScriptLimits {
            max_operations: 0,
            timeout_ms: 50,
            ..ScriptLimits::default()
        };
        let started = Instant::now();
        let err = run_err(&limits, "loop {}");
        assert_eq!(err.kind, ScriptErrorKind::Limit);
        assert!(err.message.contains("timeout_ms"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        DEADLINE.with(|d| assert_eq!(d.get(), None, "the deadline is cleared after the run"));
    }

    #[test]
    fn deep_recursion_is_a_limit_error() {
        let err = run_err(&ScriptLimits::default(), "fn f(n) { f(n + 1) } f(0);");
        assert_eq!(err.kind, ScriptErrorKind::Limit, "{err}");
    }

    #[test]
    fn recursion_through_deeply_nested_expressions_is_a_limit_error_on_a_small_stack() {
        // Each call level nests its expressions as deep as compiling allows: the worst cases
        // for Rhai's recursive evaluator. Run on a thread with a tokio worker's 2 MiB stack.
        let shapes = [("1 + (", ")"), ("switch n { 0 => 0, _ => ", "}")];
        for (open, close) in shapes {
            let source = format!(
                "fn f(n) {{ if n > 0 {{ {}f(n - 1){} }} else {{ 0 }} }} f(1000)",
                open.repeat(26),
                close.repeat(26)
            );
            let outcome = std::thread::Builder::new()
                .stack_size(2 * 1024 * 1024)
                .spawn(move || run_err(&ScriptLimits::default(), &source))
                .expect("thread starts")
                .join()
                .expect("no stack overflow");
            assert_eq!(outcome.kind, ScriptErrorKind::Limit, "{outcome}");
        }
    }

    #[test]
    fn deeply_nested_expression_is_rejected_at_compile_time() {
        let source = format!("{}1{}", "(".repeat(5_000), ")".repeat(5_000));
        let err = engine()
            .compile(&source, ScriptKind::Expression)
            .unwrap_err();
        assert_eq!(err.kind, ScriptErrorKind::Limit, "{err}");
    }

    #[test]
    fn string_doubling_hits_the_size_limit() {
        let err = run_err(&ScriptLimits::default(), r#"let s = "x"; loop { s += s; }"#);
        assert_eq!(err.kind, ScriptErrorKind::Limit, "{err}");
        let err = run_err(&ScriptLimits::default(), "let a = [1]; loop { a += a; }");
        assert_eq!(err.kind, ScriptErrorKind::Limit, "{err}");
    }

    #[test]
    fn eval_and_import_are_unavailable() {
        let err = engine()
            .compile(r#"eval("1")"#, ScriptKind::Statements)
            .unwrap_err();
        assert_eq!(err.kind, ScriptErrorKind::Syntax, "{err}");
        let err = engine()
            .compile(r#"import "std" as s;"#, ScriptKind::Statements)
            .unwrap_err();
        assert_eq!(err.kind, ScriptErrorKind::Syntax, "{err}");
    }

    #[test]
    fn eval_value_returns_json() {
        let engine = engine();
        let compiled = engine
            .compile(r#"`${body.id}-${body.n * 2}`"#, ScriptKind::Expression)
            .expect("compiles");
        let value = engine.eval_value(&compiled, &message(json!({"id": "A", "n": 2})));
        assert_eq!(value, Ok(json!("A-4")));
    }

    #[test]
    fn a_shared_engine_runs_scripts_from_many_threads() {
        let engine = engine();
        let compiled = engine
            .compile(
                "body.n = body.n * 2; if body.n > 10 { drop() }",
                ScriptKind::Statements,
            )
            .expect("compiles");
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (engine, compiled) = (engine.clone(), compiled.clone());
                std::thread::spawn(move || {
                    (0..200)
                        .map(|_| {
                            let mut msg = message(json!({"n": i}));
                            let outcome = engine.run(&compiled, &mut msg).expect("runs");
                            (outcome, msg.body)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (i, handle) in handles.into_iter().enumerate() {
            let n = i64::try_from(i).expect("small");
            for (outcome, body) in handle.join().expect("thread finishes") {
                if n * 2 > 10 {
                    assert_eq!(outcome, RunOutcome::Dropped);
                } else {
                    assert_eq!((outcome, body), (RunOutcome::Continue, json!({"n": n * 2})));
                }
            }
        }
    }

    #[test]
    fn limits_deserialize_with_defaults_and_reject_unknown_keys() {
        let limits: ScriptLimits =
            serde_json::from_value(json!({"timeout_ms": 200})).expect("valid");
        assert_eq!(
            limits,
            ScriptLimits {
                timeout_ms: 200,
                ..ScriptLimits::default()
            }
        );
        assert!(serde_json::from_value::<ScriptLimits>(json!({"max_ops": 1})).is_err());
        let schema =
            serde_json::to_string(&schemars::schema_for!(ScriptLimits)).expect("serializes");
        assert!(schema.contains("Wall-clock deadline"), "{schema}");
    }
}
