"""`nai completion bash|zsh|fish`: a shell completion script, made from `nai`'s parser.

The script is static: it knows every command, verb and option (and the choices of
options that have them) as this version of `nai` defines them, so completing costs
the shell nothing and runs no Python. Files are completed where a command takes a
path or a name. Install it once, with one command (see INSTALL), and again after an
upgrade that adds commands."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

SHELLS = ("bash", "zsh", "fish")
INSTALL = {
    "bash": "nai completion bash > ~/.local/share/bash-completion/completions/nai",
    "zsh": 'nai completion zsh > "${fpath[1]}/_nai"   # or any folder on $fpath',
    "fish": "nai completion fish > ~/.config/fish/completions/nai.fish",
}
# Where a configured server's name goes: completed from `nai server list`.
SERVER_OPTIONS = ("-s", "--server")
SERVER_NAME_PATHS = ("server remove", "server rm", "server default", "server trust")
EPILOG = "install (then open a new shell):\n" + "\n".join(
    f"  {shell}: {line}" for shell, line in INSTALL.items())


@dataclass
class Node:
    """One (sub)command: its path of words, options and subcommands."""

    path: str
    help: str = ""
    flags: list[tuple[list[str], str]] = field(default_factory=list)  # (names, help)
    valued: list[tuple[list[str], str, list[str]]] = field(default_factory=list)  # + choices
    subs: dict[str, Node] = field(default_factory=dict)

    def walk(self) -> list[Node]:
        return [self, *(n for sub in self.subs.values() for n in sub.walk())]

    def options(self) -> list[str]:
        return [n for names, _ in self.flags for n in names] + \
               [n for names, _, _ in self.valued for n in names]


def tree(parser: argparse.ArgumentParser, path: str = "", help_text: str = "") -> Node:
    """The commands of `parser`, its subparsers' too, as the scripts need them."""
    node = Node(path, help_text)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():  # an alias (server rm) as its own
                primary = next(k for k, v in action.choices.items() if v is sub)
                node.subs[name] = tree(sub, f"{path} {name}".strip(),
                                       helps.get(primary, ""))
        elif action.option_strings and action.help != argparse.SUPPRESS:
            text = (action.help or "").replace("%(default)s", str(action.default))
            if action.nargs == 0:
                node.flags.append((list(action.option_strings), text))
            else:
                node.valued.append((list(action.option_strings), text,
                                    [str(c) for c in action.choices or ()]))
    return node


def _case_lines(nodes: list[Node], value: str, key: str = "{path}") -> str:
    """`"PATH") echo "WORDS";;` lines of a shell `case`, one per node."""
    lines = []
    for node in nodes:
        words = value.format(
            subs=" ".join(node.subs), options=" ".join(node.options()),
            valued=" ".join(n for names, _, _ in node.valued for n in names))
        lines.append(f'        "{key.format(path=node.path)}") echo "{words}";;')
    return "\n".join(lines)


def _helpers(root: Node, prefix: str) -> str:
    """Shell functions (bash and zsh alike) that answer per command path."""
    nodes = root.walk()
    choices = "\n".join(
        f'        "{node.path}|{name}") echo "{" ".join(values)}";;'
        for node in nodes for names, _, values in node.valued if values for name in names)
    return f"""\
{prefix}_sub() {{
    case "$1" in
{_case_lines(nodes, "{subs}")}
    esac
}}
{prefix}_opts() {{
    case "$1" in
{_case_lines(nodes, "{options}")}
    esac
}}
{prefix}_valued() {{
    case "$1" in
{_case_lines(nodes, "{valued}")}
    esac
}}
{prefix}_choices() {{
    case "$1|$2" in
{choices}
    esac
}}
{prefix}_servers() {{
    nai server list 2>/dev/null | awk 'NR > 1 {{ print ($1 == "*") ? $2 : $1 }}'
}}
{prefix}_wants_server() {{
    # $1: the command path, $2: the word before the cursor
    case "$2" in {"|".join(SERVER_OPTIONS)}) return 0;; esac
    case "$1" in {"|".join(f'"{p}"' for p in SERVER_NAME_PATHS)}) [[ $2 != -* ]] && return 0;; esac
    return 1
}}
{prefix}_cmdpath() {{
    # The command path (`dataset push`) of the words before the cursor; an option's
    # value (`-s lab`) is not a word of it.
    local cmdpath="" word skip=0
    for word in "$@"; do
        if [[ $skip == 1 ]]; then skip=0; continue; fi
        if [[ $word == -* ]]; then
            [[ " $({prefix}_valued "$cmdpath") " == *" $word "* ]] && skip=1
            continue
        fi
        [[ " $({prefix}_sub "$cmdpath") " == *" $word "* ]] &&
            cmdpath="${{cmdpath:+$cmdpath }}$word"
    done
    echo "$cmdpath"
}}
"""


def bash(root: Node) -> str:
    return f"""\
# bash completion for nai, made by `nai completion bash`. Install:
#   {INSTALL["bash"]}
{_helpers(root, "_nai")}
_nai() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}} cmdpath choices
    cmdpath=$(_nai_cmdpath "${{COMP_WORDS[@]:1:COMP_CWORD-1}}")
    COMPREPLY=()
    if [[ $cur != -* ]] && _nai_wants_server "$cmdpath" "$prev"; then
        COMPREPLY=($(compgen -W "$(_nai_servers)" -- "$cur"))
        return 0
    fi
    if [[ $prev == -* && " $(_nai_valued "$cmdpath") " == *" $prev "* ]]; then
        choices=$(_nai_choices "$cmdpath" "$prev")
        [[ -n $choices ]] && COMPREPLY=($(compgen -W "$choices" -- "$cur"))
        return 0  # no choices: a value of your own, or a file (-o default)
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_nai_opts "$cmdpath")" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$(_nai_sub "$cmdpath")" -- "$cur"))
    fi
}}
complete -o default -F _nai nai
"""


def zsh(root: Node) -> str:
    return f"""\
#compdef nai
# zsh completion for nai, made by `nai completion zsh`. Install:
#   {INSTALL["zsh"]}
{_helpers(root, "_nai")}
_nai() {{
    local cur=${{words[CURRENT]}} prev=${{words[CURRENT-1]}} cmdpath choices subs
    cmdpath=$(_nai_cmdpath "${{(@)words[2,CURRENT-1]}}")
    if [[ $cur != -* ]] && _nai_wants_server "$cmdpath" "$prev"; then
        compadd -- $(_nai_servers)
        return
    fi
    if [[ $prev == -* && " $(_nai_valued "$cmdpath") " == *" $prev "* ]]; then
        choices=$(_nai_choices "$cmdpath" "$prev")
        if [[ -n $choices ]]; then compadd -- ${{=choices}}; else _files; fi
        return
    fi
    if [[ $cur == -* ]]; then
        compadd -- ${{=$(_nai_opts "$cmdpath")}}
        return
    fi
    subs=$(_nai_sub "$cmdpath")
    if [[ -n $subs ]]; then compadd -- ${{=subs}}; else _files; fi
}}
if [[ $funcstack[1] == _nai ]]; then
    _nai "$@"  # autoloaded from $fpath: complete now
else
    compdef _nai nai  # sourced
fi
"""


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish(root: Node) -> str:
    nodes = root.walk()
    subs = "\n".join(f"        case {_fish_quote(n.path)}\n            echo {' '.join(n.subs)}"
                     for n in nodes if n.subs)
    valued = "\n".join(
        f"        case {_fish_quote(n.path)}\n            echo "
        + " ".join(name for names, _, _ in n.valued for name in names)
        for n in nodes if n.valued)
    lines = [f"""\
# fish completion for nai, made by `nai completion fish`. Install:
#   {INSTALL["fish"]}
function __nai_sub
    switch $argv[1]
{subs}
    end
end
function __nai_valued
    switch $argv[1]
{valued}
    end
end
function __nai_servers
    nai server list 2>/dev/null | awk 'NR > 1 {{ print ($1 == "*") ? $2 : $1 }}'
end
function __nai_cmdpath
    # The command path (`dataset push`) of the words before the cursor.
    set -l cmdpath ''
    set -l skip 0
    for word in (commandline -opc)[2..-1]
        if test $skip = 1
            set skip 0
            continue
        end
        if string match -q -- '-*' $word
            contains -- $word (string split ' ' -- (__nai_valued $cmdpath)); and set skip 1
            continue
        end
        if contains -- $word (string split ' ' -- (__nai_sub $cmdpath))
            set cmdpath (string trim -- "$cmdpath $word")
        end
    end
    echo $cmdpath
end
"""]
    for node in nodes:
        when = f"-n {_fish_quote(f'test (__nai_cmdpath) = {_fish_quote(node.path)}')}"
        for name, sub in node.subs.items():
            lines.append(f"complete -c nai {when} -f -a {_fish_quote(name)} "
                         f"-d {_fish_quote(sub.help)}")
        for names, text in node.flags:
            lines.append(f"complete -c nai {when} {_fish_names(names)} -d {_fish_quote(text)}")
        if node.path in SERVER_NAME_PATHS:
            lines.append(f"complete -c nai {when} -f -a '(__nai_servers)' "
                         f"-d 'configured server'")
        for names, text, values in node.valued:
            what = f"-x -a {_fish_quote(' '.join(values))}" if values else "-r"
            if set(names) & set(SERVER_OPTIONS):
                what = "-x -a '(__nai_servers)'"
            lines.append(f"complete -c nai {when} {_fish_names(names)} {what} "
                         f"-d {_fish_quote(text)}")
    return "\n".join(lines) + "\n"


def _fish_names(names: list[str]) -> str:
    return " ".join(f"-l {n[2:]}" if n.startswith("--") else f"-s {n[1:]}" for n in names)


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    root = tree(parser)
    return {"bash": bash, "zsh": zsh, "fish": fish}[shell](root)


def cmd_completion(args: argparse.Namespace) -> int:
    from nai_tui.cli import build_parser

    print(script(args.shell, build_parser()), end="")
    return 0
