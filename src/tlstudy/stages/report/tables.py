"""The report's Markdown tables and the cells they are made of. Every accuracy is a percentage
with its 95 % interval in brackets where the details carry one; the study's number stands beside
ours, "—" where it gives none."""

from __future__ import annotations

from tlstudy.lib import uncertainty
from tlstudy.stages.report import study as S
from tlstudy.stages.report import verdicts
from tlstudy.stages.report.inputs import target_test
from tlstudy.training.optimizers import label

DASH = "—"


def pct(x) -> str:
    return DASH if x is None else f"{100 * x:.2f} %"


def num(x, fmt="{:g}") -> str:
    return DASH if x is None else fmt.format(x)


def prose(text: str) -> str:
    """A paragraph wrapped at 120 characters, as the README quotes it (Markdown joins the lines)."""
    import textwrap

    return textwrap.fill(text, width=120, break_long_words=False, break_on_hyphens=False)


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pct_ci(m: dict | None, key: str) -> str:
    """`67.51 % [61.3, 73.1]`: an accuracy with its 95 % interval, when the details carry one."""
    if not m or m.get(key) is None:
        return DASH
    lo, hi = m.get(f"{key}_lo"), m.get(f"{key}_hi")
    if lo is None or hi is None:
        return pct(m[key])
    return f"{100 * m[key]:.2f} % [{100 * lo:.1f}, {100 * hi:.1f}]"


def wilson_cell(acc: float, n: int) -> str:
    """An accuracy on n images with its Wilson interval (for figures that give the counts)."""
    lo, hi = uncertainty.wilson(round(acc * n), n)
    return pct_ci({"a": acc, "a_lo": lo, "a_hi": hi}, "a")


def n_seeds(m: dict | None) -> int:
    return len(m["seeds"]) if m and "seeds" in m else 1


def lr_cell(m: dict) -> str:
    """The selected lr: one value, or per seed how often each was picked (`0.01 ×3, 0.001 ×2`)."""
    if "lr" in m:
        return num(m["lr"])
    counts: dict[float, int] = {}
    for p in m["seeds"].values():
        counts[p["lr"]] = counts.get(p["lr"], 0) + 1
    return ", ".join(f"{lr:g} ×{c}" for lr, c in sorted(counts.items(), key=lambda kv: (-kv[1], -kv[0])))


def epoch_cell(m: dict) -> str:
    if "epoch" in m:
        return str(m["epoch"])
    epochs = [p["epoch"] for p in m["seeds"].values()]
    return f"{min(epochs)}–{max(epochs)}" if min(epochs) != max(epochs) else str(epochs[0])


def pick_cell(m: dict | None) -> str:
    """A group's selected test accuracy and what it is: one run's (lr, epoch) or a mean of seeds."""
    if not m:
        return "not run"
    if "test_acc" not in m:
        return "all runs diverged"
    if "seeds" in m:
        return f"{pct_ci(m, 'test_acc')} (mean of {n_seeds(m)} seeds)"
    return f"{pct_ci(m, 'test_acc')} (lr {m['lr']:g}, epoch {m['epoch']})"


def study_pick_cell(s: dict | None) -> str:
    return DASH if not s or s.get("test_acc") is None else f"{pct(s['test_acc'])} (lr {s['lr']:g}, epoch {s['epoch']})"


def part_table(details: dict | None, study_part: dict, optimizers=("sgd", "adam")) -> str:
    """Tables II–VII: per optimizer our selection beside the study's."""
    header = ["optimizer", "lr", "epoch", "val acc [95 % CI]", "test acc [95 % CI]", "seeds", "study test acc",
              "study lr", "study epoch", "study val acc", "runs (diverged)"]  # fmt: skip
    rows = []
    details = details or {}
    for opt in list(dict.fromkeys([*optimizers, *details])):
        m, s = details.get(opt), study_part.get(opt) or {}
        if m is None:
            ours, runs = ["not run"] + [DASH] * 4, DASH
        elif "test_acc" not in m:
            ours, runs = [f"all {m['runs']} runs diverged"] + [DASH] * 4, f"{m['runs']} ({m['diverged']})"
        else:
            ours = [lr_cell(m), epoch_cell(m), pct_ci(m, "val_acc"), pct_ci(m, "test_acc"), str(n_seeds(m))]
            runs = f"{m['runs']} ({m['diverged']})"
        rows.append([opt, *ours, pct(s.get("test_acc")), num(s.get("lr")), num(s.get("epoch")),
                     pct(s.get("val_acc")), runs])  # fmt: skip
    return md_table(header, rows)


def sweep_order(details: dict) -> list[str]:
    """Variants as the study sorts Table VIII: by test accuracy, best first; untested last."""
    tested = {v: m for v, m in details.items() if "test_acc" in m}
    return sorted(tested, key=lambda v: (-tested[v]["test_acc"], v)) + [v for v in details if v not in tested]


def augment_table(details: dict | None, study: dict, families: dict[str, str]) -> str:
    details = details or {}
    rows = []
    for rank, v in enumerate(sweep_order(details)):
        m, s = details[v], S.variant(study, v)
        if "test_acc" in m:
            cells = [lr_cell(m), epoch_cell(m), pct_ci(m, "val_acc"), pct_ci(m, "test_acc")]
            name = f"`{v}`"
            if rank == 0:
                cells, name = [f"**{c}**" for c in cells], f"**`{v}`**"
        else:
            cells, name = [f"all {m['runs']} runs diverged", DASH, DASH, DASH], f"`{v}`"
        rows.append([name, families.get(v, DASH), *cells, num(s.get("lr")), num(s.get("epoch")),
                     pct(s.get("val_acc")), pct(s.get("test_acc"))])  # fmt: skip
    header = ["variant", "family", "lr", "epoch", "val acc [95 % CI]", "test acc [95 % CI]", "study lr",
              "study epoch", "study val acc", "study test acc"]  # fmt: skip
    return md_table(header, rows)


def inspect_table(inspect: dict, study: dict) -> str:
    """Table I: the top-5 classes with their probabilities (in %), ours beside the study's."""
    theirs = study["inspect"]["top5"]
    rows = [[i + 1, c, pct(p), theirs[i][0], pct(theirs[i][1])] for i, (c, p) in enumerate(inspect["top5"].items())]
    return md_table(["rank", "class", "probability", "study class", "study probability"], rows)


def stats_table(stats: dict | None, study: dict) -> str:
    rows = []
    for i, ch in enumerate(("r", "g", "b")):
        ours = [num(stats["mean"][ch], "{:.4f}"), num(stats["std"][ch], "{:.4f}")] if stats else [DASH, DASH]
        rows.append([ch.upper(), *ours, f"{study['stats']['mean'][i]:.4f}", f"{study['stats']['std'][i]:.4f}",
                     f"{study['imagenet']['mean'][i]:.3f}", f"{study['imagenet']['std'][i]:.3f}"])  # fmt: skip
    return md_table(["channel", "μ (ours)", "σ (ours)", "μ (study)", "σ (study)", "μ (ImageNet)", "σ (ImageNet)"], rows)


def timing_table(parts: list[str], details: dict, study: dict, optimizers: list[str]) -> str:
    rows = []
    for part in parts:
        m = details.get(part) or {}
        cells = []
        for opt in optimizers:
            o = m.get(opt, {})
            cells += [num(o.get("sec_per_epoch"), "{:.3f}"), num(o.get("ms_per_example"), "{:.3f}")]
        rows.append([f"`{part}`", *cells])
    t = study["timing"]
    theirs = [num(t.get(f"{opt}_{key}")) for opt in optimizers for key in ("sec_per_epoch", "ms_per_example")]
    rows.append(["study (full fine-tuning, 227 px)", *theirs])
    header = [f"{label(opt)} {unit}" for opt in optimizers for unit in ("s/epoch", "ms/example")]
    return md_table(["part", *header], rows)


def points(d: float, lo: float, hi: float) -> str:
    """`+2.1 [−0.4, +4.6]`: a difference in points with its interval."""
    return f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]".replace("-", "−")


def test_cell(t: dict | None) -> str:
    """`+2.1 [−0.4, +4.6] pp; p = 0.08, Holm 0.24; no difference shown`: a difference, its
    interval over test images and seeds, its raw and family-adjusted p, and the rule's words."""
    if t is None:
        return DASH
    return (f"{points(t['diff'], t['lo'], t['hi'])} pp; {uncertainty.p_text(t['p'])}, "
            f"adj. {uncertainty.p_value(t['p_adjusted'])}; {t['verdict']}")  # fmt: skip


def edges(inp) -> dict[str, dict[str, int]]:
    """Per optimizer, over every seed's selection in the parts that are not sweeps: how many
    selections, and how many took the grid's highest rate, its lowest, or the last epoch — a
    selection at an edge says the optimum may lie beyond it."""
    out: dict[str, dict[str, int]] = {}
    for part in inp.parts:
        resolved = inp.resolved[part]
        if resolved.sweep:
            continue
        for opt, rates in resolved.grid.items():
            m = (inp.details.get(part) or {}).get(opt) or {}
            picks = list((m.get("seeds") or ({"0": m} if "lr" in m else {})).values())
            n = out.setdefault(opt, {"selections": 0, "top rate": 0, "bottom rate": 0, "last epoch": 0})
            n["selections"] += len(picks)
            n["top rate"] += sum(len(rates) > 1 and p["lr"] == max(rates) for p in picks)
            n["bottom rate"] += sum(len(rates) > 1 and p["lr"] == min(rates) for p in picks)
            n["last epoch"] += sum(p["epoch"] == resolved.epochs for p in picks)
    return {o: n for o, n in out.items() if n["selections"]}


def edges_table(inp) -> str:
    counts = edges(inp)
    rows = [[label(o), n["selections"], *(f"{n[k]} ({100 * n[k] / n['selections']:.0f} %)"
             for k in ("top rate", "bottom rate", "last epoch"))] for o, n in counts.items()]  # fmt: skip
    header = ["optimizer", "selections", "at the grid's highest rate", "at its lowest rate", "at the last epoch"]
    return md_table(header, rows) if rows else ""


def _variant_cell(tested: dict, study: dict, v: str) -> str:
    return f"`{v}` {pct(tested[v]['test_acc'])} (study {pct(S.variant(study, v).get('test_acc'))})"


def summary(params: dict, inp, study: dict, families: dict[str, dict]) -> str:
    """The results in one table: per part, each optimizer's test accuracy of the selection (with
    its 95 % interval) beside the study's, the backbone named, each pair of optimizers tested (SGD
    vs Adam in the study) and each transfer part against its baseline, with the verdicts of their
    families (verdicts.families); the leave-one-domain-out rows; the sweep's extremes and the
    placement verdict."""
    opts, compared = inp.optimizers, inp.pairs()
    pair_tests = [(families.get(f"{label(a)} vs {label(b)} across parts") or {}).get("tests", {}) for a, b in compared]
    vs_scratch = (families.get("each transfer part vs scratch") or {}).get("tests", {})
    reported = [o for o in opts if any(S.pick(study, part, o) for part in inp.parts)]  # by the study
    rows = []
    for part in inp.parts:
        if inp.sweep(part):
            continue
        m = inp.details.get(part) or {}
        rows.append([f"`{part}`", inp.backbone(part), *[pick_cell(m.get(o)) for o in opts],
                     *[test_cell(tests.get(part)) for tests in pair_tests],
                     test_cell(vs_scratch.get(part)) if part in vs_scratch else DASH,
                     *[study_pick_cell(S.pick(study, part, o)) for o in reported]])  # fmt: skip
    for name, m in inp.pretrain.items():
        if m and opts:
            # In the column of the optimizer it pretrained with (the first where that is not compared).
            used = params["pretrain"][name]["optimizer"]
            col = opts.index(used) if used in opts else 0
            cells = [DASH] * (len(opts) + len(compared) + 1 + len(reported))
            t = target_test(m)
            cells[col] = wilson_cell(t["acc"], t["n"])
            rows.append([f"`pretrain@{name}` on {t['domain']}, no {t['domain']} training", f"pretrained here: {name}",
                         *cells])  # fmt: skip
    header = ["part", "backbone", *[f"{label(o)} test acc [95 % CI]" for o in opts],
              *[f"{label(a)} − {label(b)}, points [95 % CI]; p; verdict" for a, b in compared],
              "selected − its from-scratch baseline, points [95 % CI]; p; verdict",
              *[f"study {label(o)}" for o in reported]]  # fmt: skip
    md = [md_table(header, rows)]
    pairs = verdicts.placement_pairs(params)
    for part in inp.parts:
        tested = {v: m for v, m in (inp.details.get(part) or {}).items() if "test_acc" in m}
        if not inp.sweep(part) or not tested or any(part == theirs for _, theirs in pairs):
            continue
        order = sweep_order(tested)
        best, worst = (", ".join(_variant_cell(tested, study, v) for v in vs) for vs in (order[:3], order[-3:]))
        baseline = _variant_cell(tested, study, "none") if "none" in tested else DASH
        trained = ", ".join(label(o) for o in inp.resolved[part].optimizers)
        md += ["", prose(f"Augmentation sweep (`{part}`, {len(tested)} variants, {trained}): best {best}; "
                         f"worst {worst}; no augmentation {baseline}.")]  # fmt: skip
    for ours, theirs in pairs:
        if not (inp.sweep(ours) and inp.sweep(theirs)):
            continue
        means = verdicts.family_means(params, inp.details.get(ours) or {}, inp.details.get(theirs) or {}, study)
        h, colour = verdicts.hypothesis(means), means["colour jitter"]
        if h is not None:
            md += ["", prose(f"Augmentation placement (`{ours}` vs `{theirs}`): colour-jitter variants "
                             f"{pct(colour['ours_test'])} test accuracy on average under ours, "
                             f"{pct(colour['placed_test'])} under the study's placement; the hypothesis for the "
                             f"study's collapse is **{h['verdict']}**.")]  # fmt: skip
    return "\n".join(md) + "\n"
