"""The structure-aware fuzzer (tests/fuzz_models.py): valid models with hostile contents, through
both engines, under per-case memory, work, address-space and wall-clock limits.

3000 cases in the default run (about a minute on two cores); TTFS_FUZZ_CASES=N runs N (and
`python tests/fuzz_models.py --cases N` does the same with a progress bar and a summary).
The harness itself is checked too: a hang, a crash and a wrong answer must each be reported.
"""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

import fuzz_models
from fuzz_models import check_outcomes, generate, run_fuzz, summarize

CASES = int(os.environ.get("TTFS_FUZZ_CASES", "3000"))
FIRST_SEED = int(os.environ.get("TTFS_FUZZ_FIRST_SEED", "0"))


def fuzz_runner() -> Path:
    program = fuzz_models.find_program()
    if not program.is_file():
        pytest.skip(f"{program} is not built (CMake builds tests/c/*.c with the library when "
                    f"TTFS_BUILD_TESTS=ON; an installed wheel has none)")
    return program


def test_the_generator_is_deterministic_and_writes_valid_files():
    for seed in range(20):
        first, again = generate(seed), generate(seed)
        assert first.model == again.model and (first.images == again.images).all()
        assert first.images.shape[0] == fuzz_models.IMAGES_PER_CASE
        assert first.images.min() >= 0 and first.images.max() <= 1


def test_fuzz_cases_are_refused_cleanly_or_agree_finite_within_limits(tmp_path):
    program = fuzz_runner()
    seeds = list(range(FIRST_SEED, FIRST_SEED + CASES))
    outcomes, cases = run_fuzz(seeds, program, processes=max(2, min(os.cpu_count() or 2, 4)))
    problems = check_outcomes(outcomes, cases)
    summary = summarize(outcomes)
    print(json.dumps(summary, indent=1))
    (tmp_path / "summary.json").write_text(json.dumps(summary, indent=1))
    assert not problems, f"{len(problems)} problems in {len(seeds)} cases:\n" + "\n".join(problems[:30])
    # The cases reach what they are for: most models load and run, a good share is refused at
    # load for their derived values, some sessions by their limits or overlapping windows.
    assert summary.get("ran", 0) >= 0.3 * CASES, summary
    assert summary.get("load TTFS_ERR_BAD_VALUE", 0) >= 0.05 * CASES, summary
    assert summary.get("session stepped TTFS_ERR_LIMIT", 0) > 0, summary
    assert summary.get("session analytic TTFS_ERR_UNSUPPORTED", 0) > 0, summary
    ran_tags = {tag.split(":")[0] for case in cases
                if outcomes[case.seed].kind == "ran" and "OK" in outcomes[case.seed].detail
                for tag in case.tags}
    for wanted in ("or pool", "earliest pool", "gated pool", "kernel beyond the input", "pool after the input",
                   "conv2d output", "extreme td_integ", "extreme tau_fire", "extreme vth0",
                   "overlapping windows", "long windows", "whole run windows", "random windows",
                   "odd input shape"):
        if CASES >= 1000:
            assert wanted in ran_tags, f"no case with {wanted!r} ran: {sorted(ran_tags)}"


def _fake_program(tmp_path, name, body):
    """A stand-in for fuzz_runner (a Python script) that misbehaves on purpose."""
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\nimport sys, time, os\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_the_harness_reports_hangs_crashes_and_failures(tmp_path):
    # Case positions within a chunk file: the fake reports case 0, then misbehaves on case 1,
    # and, restarted at case 2, reports that and the rest.
    hang = _fake_program(tmp_path, "hang", """
first = int(sys.argv[2])
if first <= 1:
    print('case 0 ran OK OK OK OK hash=1', flush=True)
    time.sleep(60)
for k in range(max(first, 2), 4):
    print(f'case {k} ran OK OK OK OK hash=1', flush=True)
""")
    crash = _fake_program(tmp_path, "crash", """
first = int(sys.argv[2])
if first <= 1:
    print('case 0 ran OK OK OK OK hash=1', flush=True)
    os.abort()
for k in range(max(first, 2), 4):
    print(f'case {k} ran OK OK OK OK hash=1', flush=True)
""")
    wrong = _fake_program(tmp_path, "wrong", """
for k in range(int(sys.argv[2]), 4):
    print(f'case {k} FAIL results differ' if k == 1 else f'case {k} ran OK OK OK OK hash=1', flush=True)
""")
    seeds = [s for s in range(200) if generate(s).writer_accepts][:4]
    for program, kind in ((hang, "hang"), (crash, "crash"), (wrong, "FAIL")):
        outcomes, cases = run_fuzz(seeds, program, processes=1, case_timeout=3)
        assert [outcomes[s].kind for s in seeds] == ["ran", kind, "ran", "ran"], outcomes
        problems = check_outcomes(outcomes, cases)
        assert len(problems) == 1 and kind in problems[0], problems
