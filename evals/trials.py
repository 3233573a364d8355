"""How many variants were tried on this history: the deflated Sharpe ratio's N, counted over the runs folder.

The deflated Sharpe ratio (Bailey & Lopez de Prado 2014) asks whether a Sharpe ratio beats what the
best of N unskilled trials would show by luck. N must be every variant the researcher tried on the
same history, not only those of the current run: trying twenty prompts in twenty runs and promoting
the best is twenty trials, even if each run held one variant and the baselines. So N is counted
over every run folder kept beside this one (the runs folder), from their manifests alone:

- a trial is one distinct variant: what its results depend on (provider spec, model and parameters,
  prompt sha256, theory fingerprint and window, anonymisation, risk and paper settings) on one
  universe at one cadence. Re-running it, or renaming it, is not a new trial; changing any of these,
  the universe or the cadence is (each is a choice that could have been made by looking at results);
- a run counts when its period overlaps this run's: the same history could have been used to
  choose. A run on a disjoint period is an out-of-sample check of the others, not a trial on this
  history. Runs made AFTER this one count as well: the gate is judged now, among everything tried;
- in this run, every variant with results counts (as the run alone always did; two names for the
  same settings count twice, the conservative side); a variant of another run counts once it has
  recorded a decision (results exist that could have been looked at), unless it is one of this
  run's or was already counted;
- a folder whose manifest cannot be read cannot be counted: the count says so, as a floor.

The spread of the trials' Sharpe ratios (the DSR's other input) is still measured on this run's
variants only: they are the trials measured on the same span, where Sharpe ratios are comparable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evals.variants import EvalManifest, VariantManifest

# VariantManifest fields that define what a variant's results depend on (its name and progress do not)
_IDENTITY_FIELDS = ("provider_spec", "provider", "model", "provider_parameters", "prompt_sha256",
                    "theory_fingerprint", "window", "anonymise", "risk_sha256", "paper")


class TrialCount(BaseModel):
    """N for the deflated Sharpe ratio, and where it came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_trials: int = Field(ge=0, description="Variants tried on overlapping history: in_run + elsewhere.")
    in_run: int = Field(ge=0, description="Variants of this run with results.")
    elsewhere: int = Field(ge=0, description="Distinct variants of other runs on overlapping periods, not in this run.")
    runs: tuple[str, ...] = Field((), description="The other runs that added trials.")
    unreadable: tuple[str, ...] = Field((), description="Folders in the runs folder whose manifest could not be read.")

    def note(self) -> str:
        """One sentence for a report or the gate: how N was counted."""
        text = (f"Deflated Sharpe ratio: n_trials = {self.n_trials}, every variant tried on this history "
                f"({self.in_run} in this run")
        if self.elsewhere:
            runs = ", ".join(self.runs[:5]) + (f" and {len(self.runs) - 5} more" if len(self.runs) > 5 else "")
            text += f", {self.elsewhere} more in other runs over overlapping periods: {runs}"
        text += ")."
        if self.unreadable:
            text += (f" {len(self.unreadable)} folder(s) of the runs folder have no readable manifest and were not "
                     f"counted, so the true number may be higher: {', '.join(self.unreadable[:5])}.")
        return text


def variant_identity(variant: VariantManifest, universe: Iterable[str], cadence: str) -> str:
    """A digest of what the variant's results depend on, on this universe at this cadence (see the module doc)."""
    parts = {name: getattr(variant, name) for name in _IDENTITY_FIELDS}
    parts["universe"] = sorted(universe)
    parts["cadence"] = cadence
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def _overlaps(a: EvalManifest, b: EvalManifest) -> bool:
    return a.period_start_ms < b.period_end_ms and b.period_start_ms < a.period_end_ms


def count_trials(runs_root: str | Path, manifest: EvalManifest, with_results: Iterable[str]) -> TrialCount:
    """N for `manifest`'s run: its variants named in `with_results`, plus the distinct variants with at least
    one decision of every other run in `runs_root` whose period overlaps (see the module doc)."""
    wanted = set(with_results)
    mine = [v for v in manifest.variants if v.name in wanted]
    seen = {variant_identity(v, manifest.universe, manifest.cadence) for v in mine}
    elsewhere = 0
    runs: list[str] = []
    unreadable: list[str] = []
    root = Path(runs_root)
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for folder in folders:
        path = folder / "manifest.json"
        if not path.is_file():
            continue  # not a run (a report or cache folder kept beside the runs)
        try:
            other = EvalManifest.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, ValidationError):
            unreadable.append(folder.name)
            continue
        if other.run_id == manifest.run_id or not _overlaps(manifest, other):
            continue
        new = {variant_identity(v, other.universe, other.cadence) for v in other.variants
               if v.decisions_done > 0} - seen
        if new:
            seen |= new
            elsewhere += len(new)
            runs.append(other.run_id)
    return TrialCount(n_trials=len(mine) + elsewhere, in_run=len(mine), elsewhere=elsewhere, runs=tuple(runs),
                      unreadable=tuple(unreadable))


__all__ = ["TrialCount", "count_trials", "variant_identity"]
