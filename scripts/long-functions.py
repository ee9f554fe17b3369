#!/usr/bin/env python3
"""Functions longer than LIMIT lines outside tests (issue 17: none over ~80), in the
crate's sources, benches and examples. Run by CI (.ci/run); exits 1 when one is found
that is not in KNOWN below.

Usage: long-functions.py [--limit N] [FILE.rs...]   (default: every tracked .rs file
       under src/, benches/, examples/ and build.rs; tests/ is test code)
       long-functions.py --self-test

A function's length runs from its `fn` line to its closing brace. Test code is skipped:
an item under #[test], #[tokio::test] or #[cfg(test)] (a whole `mod tests { }`), and a
file that a #[cfg(test)] `mod NAME;` declares. Braces in strings, raw strings, chars and
comments do not count. It reads Rust lexically, not by parsing it: a macro that
defines functions is not seen, and a `fn` inside a macro's body is measured as written.
"""
import os
import re
import subprocess
import sys

LIMIT = 80

# Known long functions, each with why it is still long. One that shrinks below the limit
# is reported so that it can be taken off; one not listed fails the check.
KNOWN = {
}

FN = re.compile(r'^\s*(?:pub(?:\([^)]*\))?\s+)?(?:(?:const|async|unsafe|extern\s+"[^"]*")\s+)*fn\s+(\w+)')
TEST_ATTR = re.compile(r'^\s*#\[(?:cfg\(test\)|test|tokio::test)')
MOD = re.compile(r'^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*([;{])')
RAW_STRING = re.compile(r'b?r(#*)"')
CHAR = re.compile(r"b?'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'])'")


class Lexer:
    """Blanks out comments, strings and chars line by line, carrying block comments and
    multi-line strings from one line to the next."""

    def __init__(self):
        self.block = 0        # depth of nested /* */
        self.string = None    # the closing delimiter of an open string

    def code(self, line):
        out = []
        i, n = 0, len(line)
        while i < n:
            if self.block:
                if line.startswith("*/", i):
                    self.block -= 1
                    i += 2
                elif line.startswith("/*", i):
                    self.block += 1
                    i += 2
                else:
                    i += 1
                continue
            if self.string is not None:
                if self.string == '"' and line[i] == "\\":
                    i += 2
                elif line.startswith(self.string, i):
                    i += len(self.string)
                    self.string = None
                else:
                    i += 1
                continue
            if line.startswith("//", i):
                break
            if line.startswith("/*", i):
                self.block = 1
                i += 2
                continue
            word_before = i > 0 and (line[i - 1].isalnum() or line[i - 1] == "_")
            m = RAW_STRING.match(line, i)
            if m and not word_before:
                self.string = '"' + m.group(1)
                i = m.end()
                continue
            if line[i] == '"' or (line.startswith('b"', i) and not word_before):
                self.string = '"'
                i += 2 if line[i] == "b" else 1
                continue
            m = CHAR.match(line, i)
            if m and not word_before:
                i = m.end()
                continue
            out.append(line[i])
            i += 1
        return "".join(out)


def scan(text):
    """(name, first line, length, is_test) of every function with a body in `text`, and
    the names of the modules declared `#[cfg(test)] mod NAME;`."""
    lexer = Lexer()
    found, test_mods = [], []
    depth = 0
    open_fns = []        # (name, first line, depth outside it, is_test)
    pending = None       # a `fn` seen whose body has not opened yet: (name, line, is_test, nesting)
    test_attr = False
    test_depth = None    # depth outside the #[cfg(test)] module we are in
    for number, line in enumerate(text.splitlines(), 1):
        code = lexer.code(line)
        in_test = test_depth is not None or any(f[3] for f in open_fns)
        if TEST_ATTR.match(code):
            test_attr = True
        m = FN.match(code)
        mod = MOD.match(code)
        if m and pending is None:
            pending = [m.group(1), number, test_attr or in_test, 0]
            test_attr = False
        elif mod:
            if test_attr and mod.group(2) == ";":
                test_mods.append(mod.group(1))
            elif test_attr and test_depth is None:
                test_depth = depth
            test_attr = False
        for ch in code:
            if pending is not None and ch in "([":
                pending[3] += 1
            elif pending is not None and ch in ")]":
                pending[3] -= 1
            elif ch == ";" and pending is not None and pending[3] == 0:
                pending = None   # a declaration without a body
            elif ch == "{":
                if pending is not None and pending[3] == 0:
                    open_fns.append((pending[0], pending[1], depth, pending[2]))
                    pending = None
                depth += 1
            elif ch == "}":
                depth -= 1
                if open_fns and open_fns[-1][2] == depth:
                    name, first, _, is_test = open_fns.pop()
                    found.append((name, first, number - first + 1, is_test))
                if test_depth is not None and depth == test_depth:
                    test_depth = None
    return found, test_mods


def test_files(path, test_mods):
    """The files of `path`'s #[cfg(test)] `mod NAME;` declarations."""
    base, name = os.path.split(path)
    stem = name[:-3]
    folder = base if stem in ("mod", "lib", "main") else os.path.join(base, stem)
    files = set()
    for mod in test_mods:
        files.add(os.path.normpath(os.path.join(folder, mod + ".rs")))
        files.add(os.path.normpath(os.path.join(folder, mod, "mod.rs")))
    return files


def long_functions(paths, limit):
    skip, texts = set(), {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            texts[path] = f.read()
        skip |= test_files(path, scan(texts[path])[1])
    result = []
    for path in paths:
        if os.path.normpath(path) in skip:
            continue
        for name, first, length, is_test in scan(texts[path])[0]:
            if not is_test and length > limit:
                result.append((path, first, name, length))
    return sorted(result, key=lambda r: -r[3])


def self_test():
    text = r'''
fn short() {
    let s = "}}}"; let c = '}'; let r = r#"{"#; // }
    /* { */
}
pub(crate) async fn long<'a>(x: [u8; 4]) -> &'a str {
    let b = b'{';
    if true {
    }
    ""
}
trait T {
    fn declared(&self) -> u8;
}
#[cfg(test)]
mod tests {
    fn helper() {
    }
}
#[test]
fn a_test() {
}
#[cfg(test)]
mod more;
'''
    found, mods = scan(text)
    got = {(name, first, length, is_test) for name, first, length, is_test in found}
    want = {("short", 2, 4, False), ("long", 6, 6, False), ("helper", 17, 2, True),
            ("a_test", 21, 2, True)}
    assert got == want, got
    assert mods == ["more"], mods
    assert test_files("src/config.rs", ["tests"]) >= {"src/config/tests.rs"}
    assert test_files("src/vip/mod.rs", ["tests"]) >= {"src/vip/tests.rs"}
    print("long-functions self-test: ok")


def main(argv):
    args = argv[1:]
    if args == ["--self-test"]:
        self_test()
        return 0
    limit = LIMIT
    if args[:1] == ["--limit"]:
        limit, args = int(args[1]), args[2:]
    paths = args or [p for p in subprocess.run(
        ["git", "ls-files", "src/*.rs", "benches/*.rs", "examples/*.rs", "build.rs"],
        capture_output=True, text=True, check=True).stdout.split()]
    failed = False
    seen_known = set()
    for path, first, name, length in long_functions(paths, limit):
        why = KNOWN.get((path, name))
        if why:
            seen_known.add((path, name))
            print("known: %s:%d %s, %d lines (%s)" % (path, first, name, length, why))
        else:
            failed = True
            print("%s:%d: fn %s is %d lines (limit %d): split it by what it decides"
                  % (path, first, name, length, limit))
    if not args:
        for path, name in sorted(set(KNOWN) - seen_known):
            print("no longer long: %s %s; take it off KNOWN in %s" % (path, name, argv[0]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
