"""Diagnostic: where the live labels lose against the re-clusterer's windows (issue #16).

Runs bench/stream_quality.py's replay unchanged (the service's ingest loop and re-clusterer
decide every published label) and records each headline's label at every run, the lifecycle
events and which headlines each run took in. Then it decomposes the gap between the mean window
B-cubed F1 and the live one (the cluster each headline was last published with):

- ``unpublished_changes``: run labels that never reached downstream (0 when every change is
  published; bench/stream_quality.py reports it too);
- why a headline's last published label is noise: never clustered by any run, clustered by
  an earlier run and noise at its last one (``demoted``: its story thinned out as older
  members expired), or arrived after the last run;
- upper bounds: live F1 if every demoted headline kept its last cluster (``F1_keep_last``),
  if every id were renamed to its story's main id wherever that id mostly holds that story
  (``F1_one_id_per_story``: what perfect id continuity would give), both;
- for each story published under more than one id, why each extra id exists: the id's birth
  (created at a run, split, emerging) and whether an earlier id of the story was still alive
  then (``parallel``) or had expired / been merged away (``reborn``), and how many headlines
  carry it.

Usage: .venv/bin/python bench/research/live_gap.py [bench/stream_quality.py's options]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import stream_quality as sq  # noqa: E402

from streamer.core.quality import score_clustering
from streamer.domain.headline import NOISE


class GapReplay(sq.Replay):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.history: dict[str, list[int]] = {}  # run labels per headline, in run order
        self.history_t: dict[str, list[int]] = {}  # the stream time of each of those runs
        self.last_run_of: dict[str, int] = {}
        self.born: dict[int, tuple[int, str]] = {}  # id -> (run, how)
        self.died: dict[int, tuple[int, str]] = {}  # id -> (run, expired|merged)
        self.after_run.append(self.record_run)
        self.keyword_changes = Counter()

    def record_run(self, labels_now: dict[str, int]) -> None:
        run = self.registry.run_id
        now = int(self.times[max(self.position[h] for h in labels_now)])
        for hid, label in labels_now.items():
            self.history.setdefault(hid, []).append(label)
            self.history_t.setdefault(hid, []).append(now)
            self.last_run_of[hid] = run

    def on_cluster_events(self, events):  # type: ignore[no-untyped-def]
        super().on_cluster_events(events)
        run = self.registry.run_id
        for e in events:
            t = e.type.value
            if t == "created":
                how = "emerging" if e.emerging else ("split" if e.split_from is not None else "run")
                self.born[e.cluster_id] = (run if not e.emerging else run + 1, how)
                self.died.pop(e.cluster_id, None)
            elif t == "expired":
                self.died[e.cluster_id] = (run, "expired")
            elif t == "merged":
                for old in e.merged_from:
                    self.died[old] = (run, "merged")


def f1(story: dict[str, str], labels: dict[str, int]) -> float:
    ids = list(labels)
    return round(score_clustering(np.array([story[h] for h in ids]), np.array([labels[h] for h in ids])).bcubed_f1, 4)


def main() -> None:
    parser = argparse.ArgumentParser()
    sq.add_arguments(parser)
    args = parser.parse_args()
    interval_ms = sq.resolve_defaults(args)
    replay = GapReplay(args)
    started = time.perf_counter()
    sq.drive(replay, args.pace, args.every_noise, interval_ms)
    result = replay.result(args, interval_ms, time.perf_counter() - started)
    published, story, history = replay.published, replay.story, replay.history
    last_run = replay.registry.run_id

    why_noise: Counter[str] = Counter()
    keep_last = dict(published)
    for hid, label in published.items():
        if label != NOISE:
            continue
        runs = history.get(hid, [])
        clustered = [x for x in runs if x != NOISE]
        if not runs:
            why_noise["arrived after the last run"] += 1
        elif not clustered:
            why_noise["never clustered by a run"] += 1
        else:
            why_noise["demoted: clustered earlier, noise at its last run"] += 1
            keep_last[hid] = clustered[-1]
            if replay.last_run_of[hid] < last_run:
                why_noise["  of which expired since"] += 1

    def one_id_per_story(labels: dict[str, int]) -> dict[str, int]:
        by_id: dict[int, Counter[str]] = {}
        for hid, label in labels.items():
            if label != NOISE:
                by_id.setdefault(label, Counter())[story[hid]] += 1
        main_story = {cid: c.most_common(1)[0][0] for cid, c in by_id.items()}
        per_story: dict[str, Counter[int]] = {}
        for hid, label in labels.items():
            if label != NOISE and main_story[label] == story[hid]:
                per_story.setdefault(story[hid], Counter())[label] += 1
        main_id = {s: c.most_common(1)[0][0] for s, c in per_story.items()}
        return {h: (main_id[main_story[l]] if l != NOISE and main_story[l] in main_id else l) for h, l in labels.items()}

    # why a story carries several ids
    ids_of: dict[str, Counter[int]] = {}
    for hid, label in published.items():
        if label != NOISE:
            ids_of.setdefault(story[hid], Counter())[label] += 1
    extra: Counter[str] = Counter()
    extra_heads: Counter[str] = Counter()
    for s, counts in ids_of.items():
        if len(counts) < 2:
            continue
        ordered = sorted(counts, key=lambda cid: replay.born.get(cid, (0, ""))[0])
        main = counts.most_common(1)[0][0]
        for cid in counts:
            if cid == main:
                continue
            born_run, how = replay.born.get(cid, (0, "?"))
            earlier = [o for o in ordered if replay.born.get(o, (0, ""))[0] < born_run and o != cid]
            alive_then = [o for o in earlier if replay.died.get(o, (10**9, ""))[0] >= born_run]
            dead = [replay.died[o][1] for o in earlier if o not in alive_then]
            # does this id mostly hold another story (the story's headlines sit in someone else's topic)?
            holders = Counter(story[h] for h, l in published.items() if l == cid)
            foreign = holders.most_common(1)[0][0] != s
            if foreign:
                kind = "in another story's topic"
            elif alive_then:
                kind = f"parallel id ({how}) while an earlier id of the story lived"
            elif dead:
                kind = f"reborn ({how}) after the story's id was {dead[-1]}"
            else:
                kind = f"first id of the story is not its main one ({how})"
            extra[kind] += 1
            extra_heads[kind] += counts[cid]
    # labels as they stood when each headline was A hours old (its last run label before that age)
    by_age = {}
    for age_h in (1, 6, 12, 24, 48):
        labels = dict(published)
        for hid, runs in history.items():
            born = int(replay.times[replay.position[hid]])
            upto = [lab for lab, t in zip(runs, replay.history_t[hid], strict=True) if t <= born + age_h * 3_600_000]
            if upto:
                labels[hid] = upto[-1]
        by_age[f"F1_label_at_age_{age_h}h"] = f1(story, labels)
    mode = dict(published)
    for hid, runs in history.items():
        clustered = Counter(x for x in runs if x != NOISE)
        if clustered:
            mode[hid] = clustered.most_common(1)[0][0]
    by_age["F1_most_frequent_run_label"] = f1(story, mode)
    out = {
        "live_bcubed_f1": result["live_bcubed_f1"],
        "window_bcubed_f1_mean": result["window_bcubed_f1_mean"],
        "live_noise_share": result["live_noise_share"],
        "unpublished_changes": result["unpublished_changes"],
        "ids_per_story": result["ids_per_story"],
        "why_final_noise": dict(why_noise),
        "F1_keep_last_cluster": f1(story, keep_last),
        "F1_one_id_per_story": f1(story, one_id_per_story(published)),
        "F1_both": f1(story, one_id_per_story(keep_last)),
        **by_age,
        "extra_ids_by_cause": dict(extra.most_common()),
        "headlines_under_extra_ids_by_cause": dict(extra_heads.most_common()),
        "cluster_events": result["cluster_events"],
        "runs": result["runs"],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
