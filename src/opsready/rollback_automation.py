"""Does a rollback script really call Railway's API? Static analysis of its text; no I/O.

A call is an HTTP request that carries a GraphQL document whose operation is a ``mutation``
selecting ``deploymentRollback`` at its root, sent to an endpoint that matches the configured
Railway endpoint pattern. A mention of ``deploymentRollback`` in a comment, a docstring, a
notes template or a ``print`` is not a call.

- **Python** is parsed with ``ast``. String constants that are a rollback mutation, and
  those that name the endpoint, are followed through assignments, containers, calls
  (``json.dumps``, ``Request(...)``, ``.encode()``), attributes (``self.client``) and the
  script's own functions (their parameters, defaults and return values) to the calls that
  send requests: ``urlopen``, ``post``, ``request``, ``send``, ``execute`` and
  ``subprocess`` running a command that matches the shell pattern. A sending call reached
  by both is a rollback call. Docstrings and bare string statements send nothing, and a
  value formatted into prose (an f-string, ``%`` or ``.format`` template with words around
  it: a note or a chat message) is text for a human, not a request.
- **Shell** is read as commands: comments and here-documents that do not feed the command
  are dropped, line continuations are joined, simple assignments (``NAME=...``,
  ``read ... NAME <<EOF``) are expanded into later commands, and functions are expanded where
  they are called. A command that matches the shell pattern (by default ``curl``, ``wget``,
  HTTPie or ``xh``) and carries both the endpoint and the mutation is a rollback call;
  ``echo``, ``cat`` or ``printf`` of the same text is not.

What it cannot tell: whether the call is reached at run time (a ``--dry-run`` default, an
``if`` that never holds), whether the token it sends is valid, or what a third-party action
or binary does. The rollback workflow's latest run and the rollback drill judge those.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from opsready.evidence import redactor
from opsready.schedules import WorkflowStep

__all__ = [
    "MUTATION",
    "RollbackCall",
    "ScriptAnalysis",
    "analyse_python",
    "analyse_script",
    "analyse_shell",
    "calling_steps",
    "patterns",
    "script_language",
]

MUTATION = "deploymentRollback"
# A GraphQL document whose operation is a mutation with deploymentRollback at its root
# (optionally aliased). Anchored in Python (the string is the document); searched in shell,
# where the document sits inside a JSON body.
_MUTATION_DOC = r"mutation\b[^{]*\{\s*(?:\w+\s*:\s*)?deploymentRollback\s*\("
_MUTATION_START = re.compile(r"\A\s*" + _MUTATION_DOC)
_MUTATION_ANY = re.compile(_MUTATION_DOC)

Language = Literal["python", "shell"]

_SENDERS = frozenset({"urlopen", "post", "request", "send", "execute", "execute_async",
                      "fetch", "put", "patch"})
_SUBPROCESS = frozenset({"run", "call", "check_call", "check_output", "Popen", "system"})
_SHELLS = ("sh", "bash", "zsh", "dash", "ksh")

# Two words in a row, once placeholders are gone: a template written for people to read.
_PROSE = re.compile(r"[A-Za-z]{2,}\s+[A-Za-z]{2,}")
_PLACEHOLDER = re.compile(r"%[-#0 +]*\d*(?:\.\d+)?[sdrifx%]|\{[^{}]*\}")

# Taint labels: what may reach a value.
_MUT, _END = "mutation", "endpoint"


@dataclass(frozen=True)
class RollbackCall:
    line: int
    code: str  # the line of the call, shortened


@dataclass(frozen=True)
class ScriptAnalysis:
    """What the analysis found. ``problem`` says why the script could not be read."""

    language: Language | None
    calls: tuple[RollbackCall, ...]
    # Lines naming deploymentRollback that are no call (comments, docstrings, notes, prints).
    mentions: tuple[int, ...]
    problem: str | None = None

    @property
    def calls_api(self) -> bool:
        return bool(self.calls)


def script_language(text: str, path: str) -> Language | None:
    """From the shebang, or else the file extension."""
    first = text.lstrip("\ufeff").splitlines()[0] if text.strip() else ""
    if first.startswith("#!"):
        words = first[2:].replace("/", " ").split()
        if any(w.startswith("python") for w in words):
            return "python"
        if any(w in _SHELLS for w in words):
            return "shell"
    if path.endswith(".py"):
        return "python"
    if path.endswith((".sh", ".bash")):
        return "shell"
    return None


def patterns(endpoints: Iterable[str], shell_commands: Iterable[str]) -> tuple[str, str]:
    """One regex for the endpoints, and one for a command line that starts with one of the
    shell commands."""
    endpoint = "|".join(f"(?:{p})" for p in endpoints) or r"(?!)"
    shell = r"\A(?:" + ("|".join(f"(?:{c})" for c in shell_commands) or r"(?!)") + r")\s"
    return endpoint, shell


def analyse_script(text: str, path: str, *, endpoint_pattern: str,
                   shell_pattern: str) -> ScriptAnalysis:
    """Analyse a rollback script in the language its shebang or extension says.
    ``endpoint_pattern`` and ``shell_pattern`` come from ``patterns``."""
    language = script_language(text, path)
    if language == "python":
        return analyse_python(text, endpoint_pattern=endpoint_pattern,
                              shell_pattern=shell_pattern)
    if language == "shell":
        return analyse_shell(text, endpoint_pattern=endpoint_pattern,
                             shell_pattern=shell_pattern)
    return ScriptAnalysis(None, (), _mentions(text), problem=(
        f"{path}: neither its shebang nor its extension says Python or shell"))


def _mentions(text: str, calls: Iterable[int] = ()) -> tuple[int, ...]:
    skip = set(calls)
    return tuple(n for n, line in enumerate(text.splitlines(), 1)
                 if MUTATION in line and n not in skip)


def _code(text: str, line: int) -> str:
    lines = text.splitlines()
    # Redacted before it is cut: a script may hold a credential, and a cut one no longer matches.
    return redactor.excerpt(lines[line - 1].strip(), 200) if 0 < line <= len(lines) else ""


# -- Python -----------------------------------------------------------------------------------

Taint = frozenset[str]
_EMPTY: Taint = frozenset()


@dataclass
class _Function:
    params: list[str]
    node: ast.AST
    defaults: dict[str, ast.expr]
    # Taint of the returned value and of each sending call, in terms of parameters
    # ("param:<name>") and the two concrete labels.
    returns: Taint = _EMPTY
    sinks: tuple[tuple[Taint, int], ...] = ()


class _PythonScript:
    def __init__(self, tree: ast.Module, endpoint: re.Pattern[str],
                 shell: re.Pattern[str]) -> None:
        self.tree = tree
        self.endpoint = endpoint
        self.shell = shell
        self.docstrings = self._docstrings(tree)
        self.module_env: dict[str, Taint] = {}
        # Attributes set anywhere (``self.client = ...``), by their dotted name.
        self.attributes: dict[str, Taint] = {}
        # Module-level names bound once to a string known without running the script.
        self.literals: dict[str, str] = {}
        for statement in tree.body:
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and \
                    isinstance(statement.targets[0], ast.Name):
                text = self._literal(statement.value)
                if text is not None:
                    self.literals[statement.targets[0].id] = text
        self.functions: dict[str, _Function] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args
                positional = [*args.posonlyargs, *args.args]
                params = [a.arg for a in [*positional, *args.kwonlyargs]]
                defaults = dict(zip([a.arg for a in positional][-len(args.defaults):],
                                    args.defaults, strict=True)) if args.defaults else {}
                defaults.update({a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults,
                                                           strict=True) if d is not None})
                self.functions[node.name] = _Function(params=params, node=node,
                                                      defaults=defaults)
        self.module_env = self._environment(tree, {})

    @staticmethod
    def _docstrings(tree: ast.Module) -> set[int]:
        found: set[int] = set()
        for node in ast.walk(tree):
            # Bare string statements (docstrings among them) send nothing.
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
                    and isinstance(node.value.value, str):
                found.add(id(node.value))
        return found

    def _literal(self, node: ast.expr) -> str | None:
        """The text of a string known without running the script: a constant, a module-level
        name bound to one, a concatenation of those, or the default of
        ``os.environ.get(NAME, default)``."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return self.literals.get(node.id)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self._literal(node.left), self._literal(node.right)
            return left + right if left is not None and right is not None else None
        if isinstance(node, ast.Call) and _callee(node) in ("get", "getenv") and \
                len(node.args) == 2:
            return self._literal(node.args[1])
        return None

    def _formatted(self, text: str, literal: str, parts: list[Taint]) -> Taint:
        """A string built from a template: values formatted into prose (a notes template, a
        chat message) are text for a human, so what they carry does not flow on; into a
        request body (JSON, a GraphQL document) or a URL, it does."""
        own = self._constant_taint(text)
        words = _PLACEHOLDER.sub(" ", literal)
        if _PROSE.search(words) and not text.lstrip().startswith(("{", "mutation", "query")):
            return own
        return own.union(*parts)

    def _constant_taint(self, text: str) -> Taint:
        found = set()
        if _MUTATION_START.match(text):
            found.add(_MUT)
        if self.endpoint.search(text):
            found.add(_END)
        return frozenset(found)

    @staticmethod
    def _statements(scope: ast.AST) -> Iterable[ast.AST]:
        """The nodes of a scope, without descending into nested functions."""
        stack = list(ast.iter_child_nodes(scope))
        while stack:
            node = stack.pop()
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            yield node
            stack.extend(ast.iter_child_nodes(node))

    def _environment(self, scope: ast.AST, seed: dict[str, Taint]) -> dict[str, Taint]:
        """Name -> taint, flow-insensitive: every assignment in the scope accumulates."""
        env = dict(seed)
        for _ in range(8):
            changed = False
            for node in self._statements(scope):
                pairs: list[tuple[ast.expr, ast.expr]] = []
                if isinstance(node, ast.Assign):
                    pairs = [(t, node.value) for t in node.targets]
                elif isinstance(node, ast.AnnAssign | ast.AugAssign) and node.value is not None:
                    pairs = [(node.target, node.value)]
                elif isinstance(node, ast.For | ast.AsyncFor):
                    pairs = [(node.target, node.iter)]
                elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                    pairs = [(node.optional_vars, node.context_expr)]
                elif isinstance(node, ast.NamedExpr):
                    pairs = [(node.target, node.value)]
                for target, value in pairs:
                    taint = self.taint(value, env)
                    for name in self._names(target):
                        merged = env.get(name, _EMPTY) | taint
                        if merged != env.get(name, _EMPTY):
                            env[name] = merged
                            changed = True
                        if "." in name:
                            self.attributes[name] = self.attributes.get(name, _EMPTY) | taint
            if not changed:
                break
        return env

    @staticmethod
    def _names(target: ast.expr) -> list[str]:
        if isinstance(target, ast.Name):
            return [target.id]
        if isinstance(target, ast.Tuple | ast.List):
            return [n for e in target.elts for n in _PythonScript._names(e)]
        if isinstance(target, ast.Attribute):
            return [f"{_dotted(target)}"]
        return []

    def taint(self, node: ast.AST, env: dict[str, Taint]) -> Taint:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str) and id(node) not in self.docstrings:
                return self._constant_taint(node.value)
            return _EMPTY
        if isinstance(node, ast.JoinedStr):
            literal = [v.value if isinstance(v, ast.Constant) and isinstance(v.value, str)
                       else None for v in node.values]
            # A formatted constant (f"{BASE}/graphql") is known text: read it as such.
            text = "".join(t if t is not None else
                           (self._literal(v.value) if isinstance(v, ast.FormattedValue)
                            else None) or "x" for t, v in zip(literal, node.values, strict=True))
            parts = [self.taint(v, env) for v in node.values
                     if not isinstance(v, ast.Constant)]
            return self._formatted(text, "".join(t for t in literal if t), parts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            joined = self._literal(node)
            parts = [self.taint(node.left, env), self.taint(node.right, env)]
            return (self._constant_taint(joined) if joined else _EMPTY).union(*parts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and \
                isinstance(node.left, ast.Constant) and isinstance(node.left.value, str):
            return self._formatted(node.left.value, node.left.value,
                                   [self.taint(node.right, env)])
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr == "format" and isinstance(node.func.value, ast.Constant) and \
                isinstance(node.func.value.value, str):
            template = node.func.value.value
            return self._formatted(template, template, self._arguments(node, env))
        if isinstance(node, ast.Name):
            return env.get(node.id, self.module_env.get(node.id, _EMPTY))
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            own = env.get(dotted, self.module_env.get(dotted, self.attributes.get(dotted, _EMPTY)))
            return own | self.taint(node.value, env)
        if isinstance(node, ast.Call):
            return self._call_taint(node, env)[0]
        parts = [self.taint(child, env) for child in ast.iter_child_nodes(node)
                 if isinstance(child, ast.expr | ast.keyword | ast.comprehension)]
        return _EMPTY.union(*parts)

    def _arguments(self, call: ast.Call, env: dict[str, Taint]) -> list[Taint]:
        return [self.taint(a, env) for a in call.args] + \
            [self.taint(k.value, env) for k in call.keywords]

    def _call_taint(self, call: ast.Call, env: dict[str, Taint]) -> tuple[Taint, list[Taint]]:
        """The taint of the call's value, and of each sending call it makes (substituted)."""
        name = _callee(call)
        function = self.functions.get(name) if name else None
        receiver = self.taint(call.func.value, env) if isinstance(call.func, ast.Attribute) \
            else _EMPTY
        if function is not None:
            bound = self._bind(function, call, env)
            value = _substitute(function.returns, bound)
            # A sending call that is complete inside the function is reported there, not
            # again at every call of the function.
            sinks = [_substitute(t, bound) for t, _ in function.sinks
                     if not {_MUT, _END} <= t]
            return value, sinks
        args = self._arguments(call, env)
        value = receiver.union(*args)
        sinks = []
        if self._sends(call, name):
            sinks.append(value)
        return value, sinks

    def _sends(self, call: ast.Call, name: str | None) -> bool:
        if name in _SENDERS:
            return True
        if name in _SUBPROCESS and call.args:
            command = call.args[0]
            words: list[str] = []
            if isinstance(command, ast.List | ast.Tuple):
                words = [e.value for e in command.elts
                         if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            elif isinstance(command, ast.Constant) and isinstance(command.value, str):
                words = command.value.split()
            return bool(words) and self.shell.search(" ".join(words) + " ") is not None
        return False

    def _bind(self, function: _Function, call: ast.Call,
              env: dict[str, Taint]) -> dict[str, Taint]:
        """Parameter -> the taint of the argument this call passes for it."""
        bound: dict[str, Taint] = {}
        params = function.params
        # A method called as obj.method(...) does not pass `self` explicitly.
        offset = 1 if params[:1] in (["self"], ["cls"]) and \
            isinstance(call.func, ast.Attribute) else 0
        for i, arg in enumerate(call.args):
            if not isinstance(arg, ast.Starred) and i + offset < len(params):
                bound[params[i + offset]] = self.taint(arg, env)
        for keyword in call.keywords:
            if keyword.arg is not None:
                bound[keyword.arg] = self.taint(keyword.value, env)
        return bound

    def _seed(self, function: _Function) -> dict[str, Taint]:
        """Each parameter stands for what a call passes; a default value counts as well."""
        return {p: frozenset({f"param:{p}"}) | (
            self.taint(function.defaults[p], self.module_env) if p in function.defaults
            else _EMPTY) for p in function.params}

    def summarise(self) -> None:
        """Compute each function's return and sending-call taints, to a fixpoint."""
        for _ in range(10):
            changed = False
            for function in self.functions.values():
                env = self._environment(function.node, self._seed(function))
                returns: Taint = _EMPTY
                sinks: list[tuple[Taint, int]] = []
                for node in self._statements(function.node):
                    if isinstance(node, ast.Return) and node.value is not None:
                        returns |= self.taint(node.value, env)
                    if isinstance(node, ast.Call):
                        for taint in self._call_taint(node, env)[1]:
                            sinks.append((taint, node.lineno))
                new_sinks = tuple(sorted(set(sinks), key=lambda s: (s[1], sorted(s[0]))))
                if returns != function.returns or new_sinks != function.sinks:
                    function.returns, function.sinks = returns, new_sinks
                    changed = True
            if not changed:
                break

    def calls(self) -> list[int]:
        """Lines of the calls that send the mutation to the endpoint."""
        found: set[int] = set()
        scopes: list[tuple[ast.AST, dict[str, Taint]]] = [(self.tree, self.module_env)]
        for function in self.functions.values():
            scopes.append((function.node, self._environment(function.node,
                                                            self._seed(function))))
        for scope, env in scopes:
            for node in self._statements(scope):
                if isinstance(node, ast.Call):
                    for taint in self._call_taint(node, env)[1]:
                        if {_MUT, _END} <= taint:
                            found.add(node.lineno)
        return sorted(found)


def _substitute(taint: Taint, bound: dict[str, Taint]) -> Taint:
    out: set[str] = set()
    for label in taint:
        if label.startswith("param:"):
            out |= bound.get(label.removeprefix("param:"), _EMPTY)
        else:
            out.add(label)
    return frozenset(out)


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def analyse_python(text: str, *, endpoint_pattern: str, shell_pattern: str) -> ScriptAnalysis:
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        return ScriptAnalysis("python", (), _mentions(text),
                              problem=f"not valid Python (line {exc.lineno}: {exc.msg})")
    script = _PythonScript(tree, re.compile(endpoint_pattern), re.compile(shell_pattern))
    script.summarise()
    lines = script.calls()
    calls = tuple(RollbackCall(n, _code(text, n)) for n in lines)
    return ScriptAnalysis("python", calls, _mentions(text, lines))


# -- shell ------------------------------------------------------------------------------------

_ASSIGNMENT = re.compile(r"\A([A-Za-z_][A-Za-z0-9_]*)=(.*)\Z", re.S)
_HEREDOC = re.compile(r"<<(-?)\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*|[0-9@*])(?:(:?[-=])([^}]*))?\}"
                       r"|\$([A-Za-z_][A-Za-z0-9_]*|[0-9@*])")
_DECLARE = frozenset({"export", "local", "readonly", "declare", "typeset"})


@dataclass
class _Command:
    line: int
    words: list[str]
    stdin: str | None = None  # a here-document feeding the command
    piped_from: int | None = None  # the command whose output is piped into this one


_KEYWORDS = frozenset({"if", "then", "else", "elif", "while", "until", "do", "!", "time",
                       "exec", "command", "eval"})


def _split_commands(text: str) -> list[_Command]:
    """Logical commands: quotes respected, comments dropped, continuations joined, pipes
    noted, and each here-document attached to the command it feeds."""
    commands: list[_Command] = []
    lines = text.splitlines()
    words: list[str] = []
    word: list[str] = []
    in_word = False
    quote: str | None = None
    start = 1
    piped: int | None = None
    heredocs: list[tuple[str, bool, int]] = []  # delimiter, strip tabs, owning command
    i = 0

    def end_word() -> None:
        nonlocal in_word
        if in_word:
            words.append("".join(word))
        word.clear()
        in_word = False

    def end_command(pipe: bool = False) -> None:
        nonlocal words, piped
        end_word()
        if words:
            commands.append(_Command(start, words, piped_from=piped))
            piped = len(commands) - 1 if pipe else None
        words = []

    while i < len(lines):
        line = lines[i]
        i += 1
        if not words and not in_word and quote is None:
            start = i
        continued = False
        j = 0
        while j < len(line):
            c = line[j]
            if quote == "'":
                if c == "'":
                    quote = None
                else:
                    word.append(c)
            elif quote == '"':
                if c == "\\" and j + 1 < len(line) and line[j + 1] in '"\\$`':
                    word.append(line[j + 1])
                    j += 1
                elif c == '"':
                    quote = None
                else:
                    word.append(c)
            elif c in "'\"":
                quote = c
                in_word = True
            elif c == "\\":
                if j + 1 == len(line):
                    continued = True
                    break
                word.append(line[j + 1])
                in_word = True
                j += 1
            elif c == "#" and not in_word:
                break  # a comment runs to the end of the line
            elif c in " \t":
                end_word()
            elif line.startswith("<<", j) and (m := _HEREDOC.match(line, j)):
                end_word()
                heredocs.append((m.group(3), m.group(1) == "-", len(commands)))
                j = m.end()
                continue
            elif c in ";&|":
                pipe = c == "|" and not line.startswith("||", j) and \
                    not (j > 0 and line[j - 1] == "|")
                end_command(pipe=pipe)
                start = i
            else:
                word.append(c)
                in_word = True
            j += 1
        if quote is not None:
            word.append("\n")  # a quoted string goes on on the next line
            continue
        if continued:
            continue
        end_command()
        for delimiter, strip_tabs, owner in heredocs:
            body: list[str] = []
            while i < len(lines):
                raw = lines[i].lstrip("\t") if strip_tabs else lines[i]
                i += 1
                if raw == delimiter:
                    break
                body.append(raw)
            if owner < len(commands):
                commands[owner].stdin = "\n".join(body)
        heredocs = []
    end_command()
    return commands


def _expand(text: str, env: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(4)
        default = m.group(3)
        value = env.get(name)
        if value is None or (value == "" and m.group(2) and m.group(2).startswith(":")):
            return default if default is not None else m.group(0)
        return value

    return _VARIABLE.sub(sub, text)


def _command_words(words: list[str]) -> list[str]:
    """The words of the command itself: without leading keywords and declarations, and
    without the ``NAME=$(`` of a command substitution."""
    out = list(words)
    while out and (out[0] in _KEYWORDS or out[0] in _DECLARE):
        out = out[1:]
    if out:
        m = _ASSIGNMENT.match(out[0])
        if m and m.group(2).startswith(("$(", "`")):
            first = m.group(2)[2:] if m.group(2).startswith("$(") else m.group(2)[1:]
            out = ([first] if first else []) + out[1:]
            if out:
                out[-1] = out[-1].rstrip(")`")
    return out


def _function_head(words: list[str]) -> tuple[str, list[str]] | None:
    """``name() {``, ``name () {`` or ``function name {``: the name and the words after
    the brace."""
    if len(words) >= 2 and words[0].endswith("()") and words[1] == "{":
        return words[0][:-2], words[2:]
    if len(words) >= 3 and words[1] == "()" and words[2] == "{":
        return words[0], words[3:]
    if len(words) >= 3 and words[0] == "function" and words[2] == "{":
        return words[1].removesuffix("()"), words[3:]
    return None


def _functions(commands: list[_Command]) -> tuple[dict[str, list[_Command]], list[_Command]]:
    """The script's functions and its other commands."""
    functions: dict[str, list[_Command]] = {}
    body: list[_Command] = []
    current: str | None = None
    for command in commands:
        if current is None:
            head = _function_head(command.words)
            if head is None:
                body.append(command)
                continue
            current, rest = head
            functions[current] = []
            if rest and rest != ["}"]:
                functions[current].append(_Command(command.line, rest, command.stdin))
            if rest[-1:] == ["}"]:
                current = None
        elif command.words == ["}"]:
            current = None
        else:
            functions[current].append(command)
    return functions, body


def analyse_shell(text: str, *, endpoint_pattern: str, shell_pattern: str) -> ScriptAnalysis:
    endpoint = re.compile(endpoint_pattern)
    shell = re.compile(shell_pattern)
    functions, body = _functions(_split_commands(text))
    calls: set[int] = set()
    env: dict[str, str] = {}

    def run(block: list[_Command], args: list[str], level: int, line: int | None) -> None:
        scope = {**_positional(args)}
        outputs: list[str] = []
        for command in block:
            values = {**env, **scope}
            words = [_expand(w, values) for w in command.words]
            stdin = _expand(command.stdin, values) if command.stdin is not None else ""
            if command.piped_from is not None and command.piped_from < len(outputs):
                stdin += " " + outputs[command.piped_from]
            outputs.append(" ".join(words) + " " + stdin)
            if words and all(_ASSIGNMENT.match(w) for w in words[
                    1 if words[0] in _DECLARE else 0:]) and words[0] not in functions:
                for w in words:
                    m = _ASSIGNMENT.match(w)
                    if m:
                        env[m.group(1)] = m.group(2)
                continue
            substitution = _ASSIGNMENT.match(words[0]) if words else None
            words = _command_words(words)
            if substitution and substitution.group(2).startswith(("$(", "`")):
                # The output is unknown; what it is made of stands in for it.
                env[substitution.group(1)] = " ".join(words) + " " + stdin
            if words and words[0] == "read" and command.stdin is not None:
                names = [w for w in words[1:] if re.fullmatch(r"[A-Za-z_]\w*", w)]
                if names:
                    env[names[-1]] = stdin
                continue
            if words and words[0] in functions and level < 4:
                run(functions[words[0]], words[1:], level + 1, line or command.line)
                continue
            sent = " ".join(words) + " " + stdin
            if shell.search(" ".join(words) + " ") and endpoint.search(sent) \
                    and _MUTATION_ANY.search(sent):
                calls.add(line or command.line)

    run(body, [], 0, None)
    found = sorted(calls)
    return ScriptAnalysis("shell", tuple(RollbackCall(n, _code(text, n)) for n in found),
                          _mentions(text, found))


def _positional(args: list[str]) -> dict[str, str]:
    out = {str(i): a for i, a in enumerate(args, 1)}
    out["@"] = out["*"] = " ".join(args)
    return out


def calling_steps(steps: Iterable[WorkflowStep], *, script_path: str | None,
                  script_calls: bool, endpoint_pattern: str,
                  shell_pattern: str) -> list[WorkflowStep]:
    """The workflow steps that call ``deploymentRollback``: inline (their ``run`` is read as
    shell), or by running the rollback script at ``script_path`` when that script calls it."""
    runs_script = re.compile(rf"(^|[\s/'\"]){re.escape(script_path)}($|[\s'\"])", re.M) \
        if script_path and script_calls else None
    found = []
    for step in steps:
        if step.run is None:
            continue
        inline = analyse_shell(step.run, endpoint_pattern=endpoint_pattern,
                               shell_pattern=shell_pattern)
        if inline.calls_api or (runs_script is not None and runs_script.search(step.run)):
            found.append(step)
    return found
