"""The split verdict (issue 13 item 6): the benchmark's tests in a checker process, the model's code
in a candidate process, plain data between them.

Attacks on one's own verdict (tests/sandbox/hostile_split/, each a candidate for TESTS below) must
fail when split; the same programs joined into one process pass, which shows each attack is real
and why the in-process fallback is labelled. Then what crosses and what does not: values,
exceptions, handles, stand-ins, and the visible fallback when the *tests* pass something that
cannot cross (which the candidate cannot cause).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from evo_eval.sandbox import layers as sandbox_layers
from evo_eval.sandbox.code_exec import Split, check_programs, protections
from evo_eval.sandbox.split import defined_names, names_to_cross

HOSTILE = Path(__file__).with_name("hostile_split")
TESTS = ("def check(candidate):\n"
         "    assert candidate(1, 2) == 3\n"
         "    assert abs(candidate(1.5, 2.5) - 4.0) < 1e-6\n"
         "    assert sorted([candidate(2, 5), 0]) == [0, 7]\n"
         "\n"
         "check(add)\n")
GOOD = "def add(a, b):\n    return a + b\n"
# Attacks that fool a verdict taken in the program's own process; the rest fail either way.
FOOL_ONE_PROCESS = ("rebind_builtins", "steal_nonce", "call_reporter", "always_equal")
ATTACKS = sorted(path.stem for path in HOSTILE.glob("*.py"))


@pytest.fixture(autouse=True)
def _allowed(monkeypatch):
    monkeypatch.setenv("EVO_EVAL_ALLOW_CODE_EXEC", "1")


@pytest.fixture(scope="module", params=["probed", "guard-only"])
def attacked(request):
    programs = [Split((HOSTILE / f"{name}.py").read_text(), TESTS) for name in ATTACKS]
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "guard-only":
            facts = sandbox_layers.probe().facts
            patch.setattr(sandbox_layers, "probe", lambda: sandbox_layers.Probe(sandbox_layers.GUARD_ONLY, facts))
        batch = [Split(GOOD, TESTS), *programs, *[p.joined() for p in programs], Split(GOOD, TESTS)]
        results = check_programs(batch, timeout=3, allow=True)
    n = len(ATTACKS)
    return {"first": results[0], "last": results[-1], "split": dict(zip(ATTACKS, results[1:1 + n])),
            "joined": dict(zip(ATTACKS, results[1 + n:1 + 2 * n]))}


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_on_the_verdict_fails_when_split(attacked, name):
    result = attacked["split"][name]
    assert not result.passed and result.status in ("failed", "timeout"), (result.status, result.output[-1500:])
    assert result.verdict == "split"


def test_the_attacks_are_real_in_one_process(attacked):
    assert attacked["first"].passed and attacked["last"].passed and attacked["first"].verdict == "split"
    fooled = sorted(name for name, result in attacked["joined"].items() if result.passed)
    assert fooled == sorted(FOOL_ONE_PROCESS)
    assert all(r.verdict == "in-process" for r in attacked["joined"].values())


def _run(*programs, timeout=5):
    return check_programs(list(programs), timeout=timeout, allow=True)


def test_plain_data_and_exceptions_cross_exactly():
    candidate = ("import itertools\n"
                 "def echo(x):\n    return x\n"
                 "def special():\n    return [float('nan'), float('inf'), -0.0, 1j, b'\\x00', frozenset({1}), "
                 "{(1, 2): {3}}, 10 ** 40, 'caf\\u00e9\\ud800', -7 ** 6000]\n"
                 "def gen(n):\n    return (i * i for i in range(n))\n"
                 "def fails(kind):\n    raise {'v': ValueError, 'k': KeyError, 'c': type('Custom', (Exception,), {})}[kind]('no')\n")
    tests = ("import math\n"
             "def check(candidate):\n"
             "    value = ([1, (2.5, 'x')], {'k': {1, 2}}, None, True)\n"
             "    back = echo(value)\n"
             "    assert back == value and type(back[0][1]) is tuple and type(back[1]['k']) is set\n"
             "    got = special()\n"
             "    assert math.isnan(got[0]) and got[1] == math.inf and math.copysign(1, got[2]) == -1\n"
             "    assert got[3:] == [1j, b'\\x00', frozenset({1}), {(1, 2): {3}}, 10 ** 40, 'caf\\u00e9\\ud800', -7 ** 6000]\n"
             "    assert list(gen(4)) == [0, 1, 4, 9] and gen(2) != [0, 1]\n"
             "    assert echo(int) is int and echo(str) is str\n"
             "    for kind, exc in (('v', ValueError), ('k', KeyError)):\n"
             "        try:\n            fails(kind)\n        except exc:\n            pass\n"
             "        else:\n            raise AssertionError(kind)\n"
             "    try:\n        fails('c')\n    except Exception as e:\n"
             "        assert type(e).__name__ == 'CandidateError' and 'Custom: no' in str(e)\n"
             "check(echo)\n")
    (result,) = _run(Split(candidate, tests))
    assert result.passed and result.verdict == "split", result.output[-2000:]


def test_objects_stay_in_the_candidate_as_opaque_handles():
    # MBPP/601's shape: the tests build instances of the candidate's class and pass them back.
    candidate = ("class Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b\n"
                 "def longest(pairs, n):\n    return max(p.b - p.a for p in pairs[:n])\n"
                 "def make():\n    return lambda: 1\n")
    tests = ("p = Pair(1, 5)\n"
             "assert longest([p, Pair(2, 3)], 2) == 4\n"
             "assert p == p and p != Pair(1, 5) and not hasattr(p, 'a')\n"
             "assert 'Pair' in repr(p)\n"
             "f = make()\n"
             "assert callable(f) is False and f != make()\n")
    (result,) = _run(Split(candidate, tests))
    assert result.passed and result.verdict == "split", result.output[-2000:]


def test_tests_that_pass_functions_run_in_one_process_visibly():
    candidate = "def apply(f, x):\n    return f(x)\n"
    visible = _run(Split(candidate, "assert apply(lambda v: v + 1, 1) == 2\n"),
                   Split(candidate, "assert apply(abs, -3) == 3\n"))
    assert [(r.passed, r.verdict) for r in visible] == [(True, "in-process"), (True, "split")]


def test_the_candidate_cannot_choose_the_fallback():
    # Returning what cannot cross (a function, an object) gives a handle, never a one-process rerun.
    candidate = "def add(a, b):\n    return lambda: 3\n"
    # ...nor by binding a name the tests pass on to a module (the checker imports it by name)
    module_trick = Split("import math\ndef f(m):\n    return 1\n", "assert f(math) == 1\n")
    results = _run(Split(candidate, TESTS), module_trick)
    assert [(r.passed, r.verdict) for r in results] == [(False, "split"), (False, "split")]
    assert "cannot be passed" in results[1].output


def test_names_the_tests_read_come_from_the_right_side():
    # The prompt's helper is the checker's own; the entry point and MBPP-style builtin names are
    # the candidate's; a module the candidate imported is imported again by the checker.
    prompt = "def helper(x):\n    return x * 2\n\n\ndef solve(x):\n    \"\"\"doc\"\"\"\n"
    tests = "def check(candidate):\n    assert candidate(helper(1)) == 3 and sys.maxsize > 0\ncheck(solve)\n"
    split = Split(prompt + "    return x + 1\nimport sys\nhelper = lambda x: 0\n", tests,
                  prelude=prompt, untrusted=("solve",))
    assert names_to_cross(split) == ["solve", "sys"]
    mbpp = Split("def sum(a, b):\n    return a * b\n", "assert sum(2, 3) == 6\n", untrusted=defined_names(
        "def sum(a, b):\n    return a * b\n"))
    assert names_to_cross(mbpp) == ["sum"] and names_to_cross(Split("x = 1\n", "assert sum([1]) == 1\n")) == []
    assert names_to_cross(Split("", "def broken(:\n")) is None
    results = _run(split, mbpp, Split("", "def broken(:\n"))
    assert [(r.passed, r.verdict) for r in results] == [(True, "split"), (True, "split"), (False, "in-process")]


def test_a_candidate_that_dies_or_loops_fails_even_if_the_tests_catch_everything():
    tests = "try:\n    add(1, 2)\nexcept BaseException:\n    pass\n"
    results = _run(Split("import os\ndef add(a, b):\n    os._exit(0)\n", tests),
                   Split("def add(a, b):\n    while True:\n        pass\n", tests),
                   Split("import os\ndef add(a, b):\n    os.abort()\n", tests),
                   Split(GOOD, tests), "import os\nos.abort()\n", timeout=1)
    assert [r.passed for r in results] == [False, False, False, True, False], [r.output[-500:] for r in results]
    assert "CandidateGone" in results[0].output
    # the candidate's death, as one process reports its own (SIGSEGV where it is its PID namespace's
    # init, which ignores the SIGABRT abort() sends itself first)
    assert results[2].status.startswith("killed:") and results[2].status == results[4].status


def test_protections_describe_the_split_verdict():
    assert "checker" in protections()["verdict"] and "in-process" in protections()["verdict"]


def test_float_formatting_is_not_the_channel():
    # repr round trips would lose nothing either, but JSON must keep float vs int apart.
    (result,) = _run(Split("def f():\n    return [1.0, 1, 2 ** 0.5]\n",
                           f"r = f()\nassert type(r[0]) is float and type(r[1]) is int and r[2] == {math.sqrt(2)!r}\n"))
    assert result.passed, result.output[-1000:]


def test_builtin_subclasses_and_integer_types_cross_as_their_builtin():
    # A namedtuple, a Counter, an int-like (numpy's int64 is one): what their == would say too.
    candidate = ("import collections\n"
                 "class Five:\n    def __index__(self):\n        return 5\n"
                 "def f():\n    return collections.namedtuple('P', 'x y')(1, 2), collections.Counter('aab'), Five()\n")
    tests = "p, c, five = f()\nassert p == (1, 2) and type(p) is tuple and c == {'a': 2, 'b': 1} and five == 5\n"
    (result,) = _run(Split(candidate, tests))
    assert result.passed and result.verdict == "split", result.output[-1000:]


def test_one_process_cannot_claim_the_in_process_word():
    # Only a checker may say "in-process"; a one-piece program that writes it on every descriptor fails.
    forger = ("import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'in-process\\n')\n"
              "    except OSError:\n        pass\nos._exit(0)\n")
    (result,) = _run(forger)
    assert result.status == "failed" and not result.passed


def test_the_prelude_runs_only_where_the_tests_need_it():
    from evo_eval.sandbox.split import prelude_needed

    prompt = "import math\n\ndef poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\n\ndef f(x):\n    \"\"\"doc\"\"\"\n"
    assert prelude_needed("def check(c):\n    assert poly([1], c(0)) == 1\ncheck(f)\n", prompt, ("f",))
    assert not prelude_needed("def check(c):\n    assert c(0) == 1\ncheck(f)\n", prompt, ("f",))
