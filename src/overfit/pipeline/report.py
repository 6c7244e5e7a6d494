"""A pipeline's report: one self-contained HTML file (figures embedded) plus the PNGs.

At the top, the study's description and its conclusion in numbers (what was
selected, its test result, where each sweep's test error is lowest, which
points diverged); then, per sweep, the generalization curves (train / val /
test error against the first swept knob, one line per value of the others,
the selected point starred, diverged points marked ×), optional per-epoch
histories, and a table of every point.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from overfit.pipeline.results import Evaluation, Result, Selection, SweepResult, point_label  # noqa: E402
from overfit.tracking.curves import curve_figure, y_axis  # noqa: E402
from overfit.tracking.points import SPLITS, Point, best, ordered  # noqa: E402
from overfit.tracking.replicates import Cell  # noqa: E402
from overfit.tracking.report import decomposition_figures as report_figures, decomposition_lines  # noqa: E402
from overfit.tracking.runs import REPLICATE_KEY  # noqa: E402

if TYPE_CHECKING:
    from overfit.pipeline.spec import Pipeline, Stage
    from overfit.tracking.store import Store


def _float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _fmt(value: float) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _values(result: SweepResult, key: str) -> list[str]:
    """The values a key took, numeric ones sorted, others in the file's order."""
    return ordered([p.values[key] for p in result.points if key in p.values], result.order.get(key))


def _cells(result: SweepResult) -> list[Cell] | None:
    """A sweep's cells when it has replicates (its comparison's), else None."""
    c = result.comparison
    return c.cells if c is not None and c.replicated else None


def sweep_figure(result: SweepResult, selection: Selection | None) -> Figure | None:
    """Error on the three splits against the sweep's first knob (with replicates: mean and 95 % band), the selected
    point starred, the one-standard-error choice marked beside it."""
    keys = [k for k in result.keys if k != REPLICATE_KEY]
    if not keys:
        return None
    ours = selection is not None and selection.sweep == result.stage.name
    label = f"selected by {selection.stage.metric}" if selection is not None else ""
    cells = _cells(result)
    if cells is not None:
        assert result.comparison is not None
        chosen = selection.cell if ours and selection is not None else None
        if selection is not None:
            label = f"selected ({'one-SE rule' if selection.stage.rule == 'one_se' else 'lowest mean'})"
        second = result.comparison.one_se if chosen is None or result.comparison.one_se is not chosen else None
        return curve_figure(cells, keys[0], keys[1:], chosen, label, name=result.stage.name,
                            order=result.order.get(keys[0]), second=second)
    chosen = selection.point if ours and selection is not None else None
    return curve_figure(result.points, keys[0], keys[1:], chosen, label,
                        name=result.stage.name, order=result.order.get(keys[0]))


def decomposition_figures(result: SweepResult) -> dict[str, Figure]:
    """With replicates on data whose true function is known: bias², variance and noise against each knob."""
    c = result.comparison
    return report_figures(c) if c is not None and c.decomposed else {}


def history_figure(result: SweepResult, metric: str, store: Store) -> Figure | None:
    """A metric against the epoch, one line per point (diverged ones end in ×)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    ys = []
    for p in result.points:
        history = sorted(store.call("get_metric_history", p.run_id, metric), key=lambda m: m.step)
        label = point_label(p, result.keys) or p.run_id[:8]
        if not p.finished:
            label += " (diverged)" if p.diverged else f" ({p.status.lower()})"
        if not history:
            ax.plot([], [], "x", color="crimson", label=label + ", nothing logged")
            continue
        steps, values = [m.step for m in history], [m.value for m in history]
        ys += values
        (line,) = ax.plot(steps, values, "-", label=label)
        if not p.finished:
            ax.plot(steps[-1:], values[-1:], "x", color=line.get_color(), markersize=11, mew=2.5)
    if not ys:
        plt.close(fig)
        return None
    y_axis(ax, ys, metric)
    ax.set_xlabel("epoch")
    ax.set_title(f"{result.stage.name}: {metric} during training")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


PICTURES = ("fit", "confusion_matrix")  # the image keys a training run logs to look at


def _image(names: set[str], keys: tuple[str, ...]) -> tuple[str, str] | None:
    """The first of ``keys`` a run logged with ``log_image`` (its full-size PNG, the latest step), and its path.

    MLflow names such a file ``images/<key>+step+<step>+timestamp+…png`` (``%`` before MLflow 3), beside a
    ``+compressed`` thumbnail.
    """
    for key in keys:
        found = []
        for path in names:
            parts = re.split(r"[+%]", path.removeprefix("images/").removesuffix(".png"))
            if path.endswith(".png") and parts[0] == key and len(parts) > 2 and parts[1] == "step" \
                    and parts[2].isdigit() and not path.endswith("compressed.png"):
                found.append((int(parts[2]), path))
        if found:
            return key, max(found)[1]
    return None


def pictures(result: SweepResult, selection: Selection | None, store: Store) -> list[tuple[Point, str, bytes]]:
    """The runs' own pictures for a few telling points: the ends of a 1-knob sweep and the chosen one."""
    import tempfile

    finished = [p for p in result.points if p.finished and math.isfinite(p.error("test"))]
    if not finished:
        return []
    chosen = selection.point if selection is not None and selection.sweep == result.stage.name else None
    chosen = chosen or best(finished) or finished[0]
    if len(result.keys) == 1:
        xs = _values(result, result.keys[0])
        along = sorted(finished, key=lambda p: xs.index(p.values[result.keys[0]]) if p.values.get(result.keys[0]) in xs else 0)
        picked = [along[0], chosen, along[-1]]
    else:
        picked = [max(finished, key=lambda p: p.error("test")), chosen]
    out = []
    for p in {p.run_id: p for p in picked}.values():
        found = _image({a.path for a in store.call("list_artifacts", p.run_id, "images")}, PICTURES)
        if found is None:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out.append((p, found[0], Path(store.call("download_artifacts", p.run_id, found[1], tmp)).read_bytes()))
    return out


def conclusions(results: dict[str, Result], names: list[str]) -> list[str]:
    """The study's result in a few HTML sentences."""
    out = []
    kinds = (Selection, Evaluation, SweepResult)
    names = sorted(names, key=lambda n: next((i for i, k in enumerate(kinds) if isinstance(results.get(n), k)), 3))
    for name in names:
        r = results.get(name)
        if isinstance(r, Selection) and r.cell is not None:
            out.append(_cell_selection(r, results))
        elif isinstance(r, Selection):
            kind = results[r.sweep].stage.kind
            out.append(f"<b>{html.escape(r.stage.name)}</b>: selected <b>{html.escape(r.label)}</b> from {kind} "
                       f"'{html.escape(r.sweep)}' by {r.stage.mode} {html.escape(r.stage.metric)} = {r.value:.4g}; "
                       f"its test error {r.point.error('test'):.4g}.")
        elif isinstance(r, Evaluation):
            m = r.metrics
            parts = [f"test error <b>{_fmt(m.get('test/error', math.nan))}</b>"]
            if "test/acc" in m:
                parts.append(f"test accuracy {m['test/acc']:.4g}")
            parts.append(f"train error {_fmt(m.get('train/error', math.nan))}, val error {_fmt(m.get('val/error', math.nan))}")
            n = len([p for p in r.result.points if p.finished])
            runs = (f" (mean of {n} runs on new seeds, 95 % CI ± {r.spread.get('test/error', math.nan):.2g})"
                    if n > 1 else "")
            out.append(f"<b>{html.escape(r.stage.name)}</b>: the selected config ({html.escape(r.selection.label)}) "
                       f"has {', '.join(parts)}{runs}.")
        elif isinstance(r, SweepResult) and _cells(r) is not None:
            out.append(_cells_sentence(name, r))
        elif isinstance(r, SweepResult):
            out.append(_sweep_sentence(name, r))
    return out


def _cell_selection(r: Selection, results: dict[str, Result]) -> str:
    """The chosen point with its interval, and — when they differ — what the other rule would choose."""
    assert r.cell is not None
    sweep = results[r.sweep]
    assert isinstance(sweep, SweepResult) and sweep.comparison is not None
    found = r.cell.stat(r.stage.metric)
    interval = f"{found.text()} (mean ± 95 % CI over {found.n} seeds)" if found is not None else f"{r.value:.4g}"
    rule = "the one-standard-error rule on" if r.stage.rule == "one_se" else f"{r.stage.mode} mean"
    text = (f"<b>{html.escape(r.stage.name)}</b>: selected <b>{html.escape(r.label)}</b> from sweep "
            f"'{html.escape(r.sweep)}' by {rule} {html.escape(r.stage.metric)} = {html.escape(interval)}; its test "
            f"error {html.escape(r.cell.text('test'))}.")
    c = sweep.comparison
    other = c.one_se if r.stage.rule == "min" else c.chosen
    if other is not None and other is not r.cell:
        which = "The one-standard-error rule would choose" if r.stage.rule == "min" else "The lowest mean is"
        text += (f" {which} {html.escape(other.label)} (val error {html.escape(other.text('val'))}, test error "
                 f"{html.escape(other.text('test'))}).")
    elif other is not None and r.stage.rule == "min":
        text += " The one-standard-error rule chooses the same point."
    overlapping = [x for x in c.cells if x is not r.cell and (b := x.band("val")) and (m := r.cell.band("val"))
                   and b[0] <= m[1] and m[0] <= b[1]]
    if overlapping:
        text += (f" Its validation interval overlaps those of {len(overlapping)} other point(s) "
                 f"({html.escape(', '.join(x.label for x in overlapping[:4]))}{', ...' if len(overlapping) > 4 else ''})"
                 ": the data cannot tell them apart at this number of seeds.")
    return text


def _cells_sentence(name: str, r: SweepResult) -> str:
    """With replicates: where the mean test error is lowest, the trend along the first knob, bias and variance."""
    cells = _cells(r)
    assert cells is not None and r.comparison is not None
    done = [c for c in cells if math.isfinite(c.error("test"))]
    text = f"<b>{html.escape(name)}</b> ({len(cells)} points × {r.comparison.seeds} seeds): "
    if not done:
        return text + "no point finished."
    lo = min(done, key=lambda c: c.error("test"))
    text += f"lowest mean test error {html.escape(lo.text('test'))} at {html.escape(lo.label)}"
    keys = [k for k in r.keys if k != REPLICATE_KEY]
    if len(keys) == 1 and all(_float(c.values[keys[0]]) is not None for c in done) and len(done) > 1:
        line = sorted(done, key=lambda c: float(c.values[keys[0]]))
        first, last = line[0], line[-1]
        text += (f"; as {html.escape(keys[0])} goes {first.values[keys[0]]} → {last.values[keys[0]]}, mean train "
                 f"error {first.error('train'):.4g} → {last.error('train'):.4g}, mean test error "
                 f"{first.error('test'):.4g} → {last.error('test'):.4g}")
        if first.decomposition is not None and last.decomposition is not None:
            text += (f"; bias² {first.decomposition.bias2:.3g} → {last.decomposition.bias2:.3g}, variance "
                     f"{first.decomposition.variance:.3g} → {last.decomposition.variance:.3g}")
    text += ". " + " ".join(html.escape(line) for line in decomposition_lines(r.comparison))
    return text.rstrip()


def _sweep_sentence(name: str, r: SweepResult) -> str:
    """Where the test error is lowest and highest, the trend along a numeric knob, what diverged."""
    finished = [p for p in r.points if p.finished and math.isfinite(p.error("test"))]
    text = f"<b>{html.escape(name)}</b> ({len(r.points)} points): "
    if not finished:
        text += "no point finished"
    else:
        lo = min(finished, key=lambda p: p.error("test"))
        hi = max(finished, key=lambda p: p.error("test"))
        text += f"lowest test error {lo.error('test'):.4g} at {html.escape(point_label(lo, r.keys))}"
        ties = [p for p in finished if p is not lo and p.error("test") <= 1.01 * lo.error("test")]
        if ties:
            text += " (within 1% at " + ", ".join(html.escape(point_label(p, r.keys)) for p in ties) + ")"
        text += f", highest {hi.error('test'):.4g} at {html.escape(point_label(hi, r.keys))}"
        key = r.keys[0] if r.keys else None
        xs = _values(r, key) if key else []
        if key and len(xs) > 1 and all(_float(x) is not None for x in xs):
            others = r.keys[1:]
            groups = list(dict.fromkeys(tuple(p.values.get(k) for k in others) for p in finished))
            for group in groups:
                line = sorted((p for p in finished if tuple(p.values.get(k) for k in others) == group),
                              key=lambda p: float(p.values[key]))
                if len(line) < 2:
                    continue
                first, last = line[0], line[-1]
                where = " ".join(f"{k.removesuffix('.name')}={v}" for k, v in zip(others, group))
                text += (f"; {html.escape(where + ': ' if where else '')}as {html.escape(key)} goes "
                         f"{first.values[key]} → {last.values[key]}, train error {first.error('train'):.4g} → "
                         f"{last.error('train'):.4g}, test error {first.error('test'):.4g} → {last.error('test'):.4g}")
    for group, word in ((r.diverged, "diverged"), (r.failed, "failed")):
        if group:
            labels = ", ".join(html.escape(point_label(p, r.keys)) for p in group)
            text += f"; <span class=bad>{len(group)} {word}</span> ({labels})"
    return text + "."


def table(result: SweepResult, selection: Selection | None) -> str:
    metrics = [f"{s}/error" for s in SPLITS]
    if any("test/acc" in p.metrics for p in result.points):
        metrics.append("test/acc")
    metrics.append("generalization_gap")
    why = any(not p.finished for p in result.points)
    head = [k.removesuffix(".name") for k in result.keys] + metrics + ["status", "run"] + (["why"] if why else [])
    rows = []
    for p in result.points:
        chosen = selection is not None and selection.point.run_id == p.run_id
        cells = [html.escape(p.values.get(k, "")) for k in result.keys]
        if chosen and cells:
            cells[0] = "★ " + cells[0]
        cells += [_fmt(p.metric(m)) for m in metrics]
        if p.finished:
            status = "finished" + (" (reused)" if p.reused else "")
        else:
            word = "diverged" if p.diverged else p.status.lower()
            status = f"<span class=bad title='{html.escape(p.reason, quote=True)}'>{word}</span>"
        reason = p.reason.removeprefix("diverged — ") if not p.finished else ""
        cells += [status, f"<code>{p.run_id[:8]}</code>"]
        if why:
            cells.append(f"<span class=meta>{html.escape(reason[:160])}</span>")
        rows.append(f"<tr{' class=sel' if chosen else ''}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(rows)
            + "</table>")


def cell_table(result: SweepResult, selection: Selection | None) -> str:
    """With replicates: one row per point, mean ± 95 % half-width over its seeds; bias² and variance where known."""
    cells = _cells(result)
    assert cells is not None and result.comparison is not None
    keys = [k for k in result.keys if k != REPLICATE_KEY]
    decomposed = result.comparison.decomposed
    rule = result.comparison.one_se
    head = ([k.removesuffix(".name") for k in keys] + ["n"] + [f"{s} error" for s in SPLITS]
            + (["bias²", "variance", "σ²"] if decomposed else []) + ["outcome"])
    rows = []
    for c in cells:
        chosen = selection is not None and selection.cell is c
        values = [html.escape(c.values.get(k, "")) for k in keys]
        if values:
            values[0] = ("★ " if chosen else "") + ("◆ " if rule is c else "") + values[0]
        values += [str(c.n)] + [html.escape(c.text(s)) for s in SPLITS]
        if decomposed:
            d = c.decomposition
            values += [_fmt(d.bias2), _fmt(d.variance), _fmt(d.noise)] if d is not None else ["", "", ""]
        failed = [p for p in c.replicates if not p.finished]
        outcome = f"{c.n} finished" + (f", <span class=bad>{len(failed)} did not</span>" if failed else "")
        rows.append(f"<tr{' class=sel' if chosen else ''}>" + "".join(f"<td>{v}</td>" for v in values)
                    + f"<td>{outcome}</td></tr>")
    legend = ("<p class=meta>★ selected" + (", ◆ one-standard-error rule" if rule is not None else "")
              + "; errors are the mean ± 95 % CI half-width (Student t) over seeds; every run is in the sweep's "
              "<code>report/runs.csv</code>.</p>")
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(rows)
            + "</table>" + legend)


CSS = """body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} .desc{font-size:1.05em;line-height:1.5;color:#333}
.conclusion{background:#f4f8ee;border-left:5px solid #6a9f2a;padding:.6em 1.2em;margin:1em 0}
.conclusion li{margin:.35em 0} table{border-collapse:collapse;font-size:.9em;margin:.6em 0 1.6em}
td,th{border:1px solid #ccc;padding:3px 9px;text-align:right} th{background:#f0f0f0}
tr.sel td{background:#fff3c4;font-weight:bold} .bad{color:crimson;font-weight:bold}
img{max-width:100%;border:1px solid #eee} .meta{color:#666;font-size:.85em} pre{background:#f7f7f7;padding:.8em}
.shots{display:flex;gap:.6em} .shots figure{flex:1;margin:0} figure{margin:.5em 0}"""


def write(pipeline: Pipeline, stage: Stage, results: dict[str, Result], out: Path, store: Store, run_id: str) -> Path:
    """``out/report.html`` and its PNGs; returns the HTML path."""
    from overfit.tracking import ui

    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.png"), out / "report.html"]:
        old.unlink(missing_ok=True)
    selections = [r for r in results.values() if isinstance(r, Selection)]
    body: list[str] = []

    def figure(fig: Figure | None, name: str, caption: str) -> None:
        if fig is None:
            return
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        (out / name).write_bytes(buffer.getvalue())
        data = base64.b64encode(buffer.getvalue()).decode()
        body.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                    f"<figcaption class=meta>{html.escape(caption)} ({name})</figcaption></figure>")

    for name in stage.needs:
        r = results.get(name)
        sweep = r.result if isinstance(r, Evaluation) else r
        if not isinstance(sweep, SweepResult):
            continue
        selection = next((s for s in selections if s.sweep == name), None)
        kind = "evaluation of " + r.selection.label if isinstance(r, Evaluation) else sweep.stage.kind
        body.append(f"<h2>{html.escape(name)} <span class=meta>({html.escape(kind)})</span></h2>")
        if sweep.stage.description:
            body.append(f"<p>{html.escape(sweep.stage.description)}</p>")
        shown = " ".join(a.override().text for a in sweep.stage.axes)
        body.append(f"<p class=meta>axes: <code>{html.escape(shown or '—')}</code>; parent run "
                    f"<code>{sweep.parent_run_id}</code>; {sweep.seconds:.1f} s</p>")
        figure(sweep_figure(sweep, selection), f"{name}_curves.png", f"generalization: {name}")
        for file, fig in decomposition_figures(sweep).items():
            figure(fig, f"{name}_{file}", f"bias–variance decomposition: {name}")
        for metric in [] if isinstance(r, Evaluation) else stage.history:
            figure(history_figure(sweep, metric, store), f"{name}_history_{metric.replace('/', '_')}.png",
                   f"{metric} during training: {name}")
        shots = [] if isinstance(r, Evaluation) else pictures(sweep, selection, store)
        if shots:
            body.append("<div class=shots>")
            for p, picture, data in shots:
                label = point_label(p, sweep.keys) or "the selected config"
                mark = " ★ selected" if selection is not None and p.run_id == selection.point.run_id else ""
                file = f"{name}_{picture}_{re.sub(r'[^A-Za-z0-9_.=-]+', '_', label)}.png"
                (out / file).write_bytes(data)
                caption = f"{label}{mark}: test error {p.error('test'):.4g}"
                body.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,"
                            f"{base64.b64encode(data).decode()}'><figcaption class=meta>{html.escape(caption)}"
                            f"</figcaption></figure>")
            body.append("</div>")
        body.append(cell_table(sweep, selection) if _cells(sweep) is not None else table(sweep, selection))
    title = stage.title or f"{pipeline.name}"
    bullets = "".join(f"<li>{c}</li>" for c in conclusions(results, stage.needs))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class=desc>{html.escape(pipeline.description)}</p>
<div class=conclusion><h3>Result</h3><ul>{bullets}</ul></div>
{''.join(body)}
<h2>Provenance</h2>
<p class=meta>pipeline run <code>{run_id}</code> in experiment <code>{html.escape(pipeline.experiment)}</code>,
store <code>{html.escape(store.uri)}</code>, written {time.strftime('%Y-%m-%d %H:%M:%S')}.<br>
Open the MLflow UI: <code>{html.escape(ui.command(store.uri))}</code></p>
<details><summary>{html.escape(pipeline.shown)}</summary><pre>{html.escape(pipeline.text)}</pre></details>
</body></html>
"""
    target = out / "report.html"
    target.write_text(page)
    return target
