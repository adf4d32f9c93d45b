"""The paper's claims on a run's seed samples: the comparisons each claim makes (depth, budget, compression
and convolutional gaps, teacher against student, the ensemble against its best teacher), judged by core.noise."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from ..core import noise
from ..core.index import RunKind
from ..studies import published as P
from .cells import Cell, Run, _family_key
from .tables import T2, T1Row


def _conv_depth(f: str) -> int | None:
    return int(f[4:]) if f.startswith("conv") and f[4:].isdigit() else None


def _measured(t: T2) -> dict[str, dict[int, Cell]]:
    """family -> budget -> student cell, for cells with a number."""
    out: dict[str, dict[int, Cell]] = defaultdict(dict)
    for (_, f, b), c in t.cells.items():
        if c.samples and b is not None:
            out[f][b] = c
    return out


def _paper_pairs(table: dict[str, dict[int, float]], by: str) -> tuple[int, int]:
    """(pairs where the paper's Table 2 rises, pairs): deeper at each budget (by='depth'), or larger within a
    family (by='budget'). The paper gives one number per cell (its best trial), no spread."""
    up = tot = 0
    if by == "depth":
        for b in sorted({b for v in table.values() for b in v}):
            seq = [table[f][b] for f in sorted(table, key=lambda f: _conv_depth(f) or 0) if b in table[f]]
            up += sum(y > x for x, y in zip(seq, seq[1:]))
            tot += max(len(seq) - 1, 0)
    else:
        for v in table.values():
            seq = [v[b] for b in sorted(v)]
            up += sum(y > x for x, y in zip(seq, seq[1:]))
            tot += max(len(seq) - 1, 0)
    return up, tot


def depth_pairs(t: T2) -> list[tuple[str, list[float], list[float]]]:
    """Each added conv layer at a fixed budget: (label, deeper's samples, shallower's samples)."""
    m = _measured(t)
    out = []
    for b in sorted({b for v in m.values() for b in v}):
        fams = sorted((f for f in m if b in m[f] and _conv_depth(f) is not None), key=_conv_depth)
        out += [(f"{lo}→{hi}@{P.budget_label(b)}", m[hi][b].samples, m[lo][b].samples)
                for lo, hi in zip(fams, fams[1:])]
    return out


def budget_pairs(t: T2) -> list[tuple[str, list[float], list[float]]]:
    m = _measured(t)
    out = []
    for f, v in m.items():
        bs = sorted(v)
        out += [(f"{f} {P.budget_label(lo)}→{P.budget_label(hi)}", v[hi].samples, v[lo].samples)
                for lo, hi in zip(bs, bs[1:])]
    return out


def compression_gaps(t: T2, baselines: dict[tuple[str, int | None], Cell]) -> list[dict]:
    """Urban et al. §3 / Figure 1's "compression gaps": a mimic student minus the same family trained on the
    hard targets at the same budget, per family."""
    out = []
    for f, v in sorted(_measured(t).items(), key=lambda kv: _family_key(kv[0])):
        for b, c in sorted(v.items()):
            base = baselines.get((f, b))
            if base is not None and base.samples:
                out.append({"family": f, "budget": b, "student": c, "baseline": base})
    return out


def convolutional_gaps(t: T2) -> list[dict]:
    """Figure 1's "convolutional gap": the 1-conv student minus the 0-conv student (an MLP) at the same budget,
    the step from no convolution to one."""
    m = _measured(t)
    out = []
    for b in sorted(set(m.get("conv0", {})) & set(m.get("conv1", {}))):
        out.append({"budget": b, "conv0": m["conv0"][b], "conv1": m["conv1"][b]})
    return out


def best_student(t: T2) -> Cell | None:
    """The student cell a user would ship: the one whose best trial has the highest VALIDATION accuracy."""
    cells = [c for v in _measured(t).values() for c in v.values() if c.best_val is not None]
    return max(cells, key=lambda c: c.best_val) if cells else None


def _claim_from(pairs, paper_txt: str, claim: str) -> dict:
    """A claim over [(label, a's samples, b's samples)], each 'a beats b', by core.noise's judge."""
    return noise.claim_row(claim, paper_txt, noise.judge(pairs))


def teacher_groups(runs: list[Run], repro: dict | None = None) -> list[list[Run]]:
    """Finished teacher runs grouped by config (the seeds of one config together): a search trial with its
    seed reruns (repeat_of), and fixed teachers (reproduce's teachers/tN) whose preset entries differ only in
    their seed. Each group is ordered best validation first."""
    fixed = ((repro or {}).get("config") or {}).get("teachers") if isinstance((repro or {}).get("config"), dict) else None
    groups: dict[object, list[Run]] = defaultdict(list)
    for r in runs:
        if r.kind != RunKind.TEACHER or not r.finished or r.val is None:
            continue
        if r.repeat_of is not None or r.trial is not None:
            # by study too: two searches' trial numbers are not one config
            key: object = ("trial", r.row.get("study") or "", r.repeat_of if r.repeat_of is not None else r.trial)
        else:
            name = Path(r.row.get("path", "")).name
            i = int(name[1:]) if name[:1] == "t" and name[1:].isdigit() else None
            if isinstance(fixed, list) and i is not None and i < len(fixed) and isinstance(fixed[i], dict):
                key = ("fixed", json.dumps({k: v for k, v in fixed[i].items() if k != "seed"}, sort_keys=True))
            else:
                key = ("run", r.label)
        groups[key].append(r)
    return [sorted(g, key=lambda r: -r.val) for g in groups.values()]


def best_teacher(runs: list[Run], repro: dict | None = None) -> list[Run]:
    """The best single teacher by validation, as a seed sample: the group (teacher_groups) of the teacher run
    with the best validation accuracy; [] when there is none. A searched config trained again with seeds is
    its seed reruns alone: the trial that won the search on validation is left out, as a study arm leaves out
    the run that chose its rate (its luck chose it)."""
    groups = teacher_groups(runs, repro)
    if not groups:
        return []
    g = max(groups, key=lambda g: (g[0].val, -g[0].order))
    return [r for r in g if r.repeat_of is not None] or g


def headline(t: T2, t1: list[T1Row], teacher_ref: tuple[str, float | None], runs: list[Run] | None = None,
             repro: dict | None = None) -> list[dict]:
    """The paper's claims on this run's seed samples, each with a verdict by core.noise's judge (holds /
    differs / within noise / too few seeds / not measured)."""
    out = []
    up, tot = _paper_pairs(P.STUDENTS, "depth")
    out.append(_claim_from(depth_pairs(t), f"rises at {up} of {tot} steps (Table 2)",
                           "Deeper students are better: each added conv layer, at a fixed budget"))
    up, tot = _paper_pairs(P.STUDENTS, "budget")
    out.append(_claim_from(budget_pairs(t), f"rises at {up} of {tot} steps (Table 2)",
                           "More parameters help within a family"))
    baselines = {(r.cell.family, r.cell.budget): r.cell for r in t1 if r.section == "hard targets" and r.cell}
    comp = compression_gaps(t, baselines)
    ptxt = ", ".join(f"{f} {g:+.1f}" + (" (§3)" if f in P.COMPRESSION_GAPS_STATED else " (from Tables 1–2)")
                     for f, g in P.compression_gaps().items()) + " at 10M"
    out.append(_claim_from([(f"{g['family']}@{P.budget_label(g['budget'])}", g["student"].samples,
                             g["baseline"].samples) for g in comp], ptxt,
                           "Compression gap: mimic student − the same family on hard targets, same budget"))
    conv = convolutional_gaps(t)
    out.append(_claim_from([(f"@{P.budget_label(g['budget'])}", g["conv1"].samples, g["conv0"].samples)
                            for g in conv],
                           ", ".join(f"{g:+.1f} at {P.budget_label(b)}" for b, g in P.convolutional_gaps().items())
                           + " (from Table 2)",
                           "Convolutional gap: 1-conv student − 0-conv student (MLP), same budget"))
    name, tacc = teacher_ref
    best = best_student(t)
    pb = P.teacher_student_gap()
    claim = f"Teacher − student gap: the teacher ({name}) beats the best student (chosen on validation)"
    ptxt = f"{pb:+.1f} (from Tables 1–2: {P.ENSEMBLE['test_acc']:g} − {P.ENSEMBLE['test_acc'] - pb:g})"
    if best is not None and tacc is not None:
        out.append(_claim_from([(f"vs {best.family}@{P.budget_label(best.budget)}", [tacc], best.samples)], ptxt, claim))
    else:
        out.append(noise.claim_row(claim, ptxt, None))
    # like the paper (93.8 vs its best teacher, 92.78): the ensemble against the best single teacher by
    # validation, that teacher's config as a seed sample where it was trained with several seeds
    single = best_teacher(runs or [], repro)
    ens = [r.cell.best_test for r in t1 if r.mimicked and r.cell and r.cell.best_test is not None]
    pd_ = P.ENSEMBLE["test_acc"] - P.TEACHERS[0]["test_acc"]
    claim = "The ensemble beats its best single teacher (chosen on validation)"
    ptxt = f"{pd_:+.2f} ({P.ENSEMBLE['test_acc']:g} vs the best of 129 by validation, {P.TEACHERS[0]['test_acc']:g})"
    if single and ens:
        if single[0].repeat_of is not None:
            seeds = f"search trial {single[0].repeat_of}'s config, its {len(single)} seed rerun(s)"
        else:
            seeds = f"{single[0].label}" + (f" and its {len(single) - 1} other seed(s)" if len(single) > 1 else "")
        out.append(_claim_from([(f"vs {seeds}", ens[:1], [r.test for r in single if r.test is not None])], ptxt,
                               claim))
    else:
        out.append(noise.claim_row(claim, ptxt, None))
    return out
