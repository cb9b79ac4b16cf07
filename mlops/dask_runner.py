"""Beam 2.71's DaskRunner (apache_beam.runners.dask) with four defects fixed; the rest is Beam's.

  * A multi-output ParDo's outputs lose their tags: the bundle function returns `.value` of
    each received item, which strips TaggedOutput, so every consumer of any output gets all of
    them (TFDV's GenerateStatistics then fails with "too many values to unpack"). Here a tagged
    output keeps its tag and a consumer of one output filters the producer's bag by it.
  * A side input's bag is computed inside each consuming task (DaskBagWindowedIterator): its
    producers run again per consumer (non-deterministic ones, like a file sink's temp directory,
    give different results: TFMA's metrics files were empty) and the waiting task blocks its
    worker (two one-thread workers waiting on each other hang). Here side inputs are arguments of
    the consuming tasks, computed once by the graph.
  * GroupByKey groups with dask.bag's groupby, which hashes keys with Python's hash(): salted
    per process for str and bytes, so on several worker processes one key ends up in several
    groups (TFDV's top values were partial counts). Here keys are grouped on a stable hash.
  * Only the last visited transform's bag is computed ("connected to the full graph"): a
    pipeline with two sinks runs one of them. Here every bag nothing consumes is computed.
And the client the runner opens is closed when the pipeline has finished.

Imported only when `beam.runner: dask` (mlops.beam.pipeline): it needs apache-beam, dask and
distributed, which the pipeline image has. Its functions travel to the Dask workers by reference,
so a remote Dask cluster runs the pipeline image.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import pickle

import apache_beam
import dask
import dask.distributed as ddist
from apache_beam import DoFn, pvalue
from apache_beam.pipeline import PipelineVisitor
from apache_beam.pvalue import TaggedOutput
from apache_beam.runners.common import DoFnContext, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.dask import dask_runner
from apache_beam.runners.dask import transform_evaluator as te
from apache_beam.runners.dask.overrides import _GroupByKeyOnly, dask_overrides
from apache_beam.transforms.sideinputs import SideInputMap


@dataclasses.dataclass
class _Tagged:
    """A tagged output as apply_dofn_to_bundle keeps it: it returns `.value` of each received item,
    the element for a main output and, from this holder, the TaggedOutput."""

    value: TaggedOutput


@dataclasses.dataclass
class _TaggingReceiver(Receiver):
    tag: str | None
    values: list

    def receive(self, windowed_value):
        if self.tag:
            self.values.append(_Tagged(TaggedOutput(self.tag, windowed_value.value)))
        else:
            self.values.append(windowed_value)


@dataclasses.dataclass
class _Receivers(dict):
    values: list = dataclasses.field(default_factory=list)

    def __missing__(self, tag):
        self[tag] = _TaggingReceiver(tag, self.values)
        return self[tag]


@dataclasses.dataclass
class _SideInput:
    """A side input as the visitor hands it to _ParDo: its view, and the bag of its values."""

    view_type: type
    view_options: dict
    bag: object
    window_mapping_fn: object


def _concat(parts: list) -> list:
    return [item for part in parts for item in part]


def _apply_with_side_inputs(items, invoker_args, invoker_kwargs, receivers, views, *values):
    """apply_dofn_to_bundle with the side inputs' values computed once by the graph (arguments
    of this task), not by the task itself."""
    side_inputs = [
        SideInputMap(
            view.view_type, view.view_options, [te.get_windowed_value(v, view.window_mapping_fn) for v in vals]
        )
        for view, vals in zip(views, values)
    ]
    return te.apply_dofn_to_bundle(items, invoker_args, {**invoker_kwargs, "side_inputs": side_inputs}, receivers)


class _ParDo(te.ParDo):
    """Beam's ParDo translation with receivers that keep output tags, and side inputs that are
    dependencies in the task graph: Beam's DaskBagWindowedIterator computes a side input's bag
    inside the consuming task, which recomputes its producers (a file sink's temp directory is
    made again, under another name, by every consumer: TFMA's and TFT's outputs were empty) and
    blocks a worker thread while it waits (two one-thread workers wait for each other forever)."""

    def apply(self, input_bag, side_inputs=None):
        transform = self.transform
        args, kwargs = transform.raw_side_inputs
        main_input = next(iter(self.applied.main_inputs.values()))
        window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
        receivers = _Receivers()
        handler = _OutputHandler(
            window_fn=window_fn,
            main_receivers=receivers[None],
            tagged_receivers=receivers,
            per_element_output_counter=None,
            output_batch_converter=None,
            process_yields_batches=False,
            process_batch_yields_elements=False,
        )
        invoker_kwargs = dict(
            context=DoFnContext(transform.label, state=None),
            side_inputs=None,
            input_args=list(args),
            input_kwargs=kwargs,
            user_state_context=None,
            bundle_finalizer_param=DoFn.BundleFinalizerParam(),
        )
        windowed = input_bag.map(te.get_windowed_value, window_fn)
        invoker_args = [DoFnSignature(transform.fn), handler]
        if not side_inputs:
            return windowed.map_partitions(te.apply_dofn_to_bundle, invoker_args, invoker_kwargs, receivers)
        # The views travel as _SideInput objects without their bags: a tuple (callable, ...) in
        # a task's arguments would be run by dask as a task.
        views = [dataclasses.replace(si, bag=None) for si in side_inputs]
        values = [dask.delayed(_concat)(si.bag.to_delayed(optimize_graph=False)) for si in side_inputs]
        return windowed.map_partitions(_apply_with_side_inputs, invoker_args, invoker_kwargs, receivers, views, *values)


def _stable_hash(item) -> int:
    """The group of a (key, value) pair: a hash of the key's bytes, the same in every process
    (Python's hash() of a str or bytes key is salted per process: PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.blake2b(pickle.dumps(item[0], protocol=4), digest_size=8).digest(), "big")


def _regroup(group) -> list:
    """The (key, values) pairs of one hash group (distinct keys whose hashes collide stay apart)."""
    out: list = []
    for key, value in group[1]:
        for entry in out:
            if entry[0] == key:
                entry[1].append(te.defenestrate(value))
                break
        else:
            out.append((key, [te.defenestrate(value)]))
    return out


class _GroupByKey(te.GroupByKey):
    """Beam's GroupByKey translation groups with dask.bag's groupby on the key itself, which
    hashes it with the worker process's salted hash(): on two worker processes a str key lands in
    two groups (TFDV's top values then count part of a value's rows). Grouped on a stable hash."""

    def apply(self, input_bag, side_inputs=None):
        return input_bag.groupby(_stable_hash).map(_regroup).flatten()


TRANSLATIONS = {**te.TRANSLATIONS, apache_beam.ParDo: _ParDo, _GroupByKeyOnly: _GroupByKey}


def _has_tag(tag, item) -> bool:
    return item.tag == tag if isinstance(item, TaggedOutput) else tag is None


def _untag(item):
    return item.value if isinstance(item, TaggedOutput) else item


class _BagVisitor(PipelineVisitor):
    """Beam's DaskBagVisitor, except that a consumer of one output of a multi-output ParDo gets
    that output only, and the bags nothing consumes (the sinks) are known."""

    def __init__(self, bag_kwargs: dict):
        self.bag_kwargs = bag_kwargs
        self.bags: dict = {}
        self.consumed: set = set()

    def bag_of(self, pcoll):
        producer = pcoll.producer
        self.consumed.add(producer)
        bag = self.bags[producer]
        if len(producer.outputs) > 1:
            tag = next(t for t, out in producer.outputs.items() if out is pcoll)
            bag = bag.filter(functools.partial(_has_tag, tag)).map(_untag)
        return bag

    def visit_transform(self, node) -> None:
        op = TRANSLATIONS.get(node.transform.__class__, te.NoOp)(node, bag_kwargs=self.bag_kwargs)
        kwargs = {"input_bag": None, "side_inputs": None}
        if node.inputs:
            bags = [
                None if isinstance(v, pvalue.PBegin) else self.bag_of(v)
                for v in node.inputs
                if isinstance(v, pvalue.PBegin) or v.producer in self.bags
            ]
            kwargs["input_bag"] = bags[0] if len(bags) == 1 and not isinstance(op, te.Flatten) else bags
        if node.side_inputs:
            kwargs["side_inputs"] = [
                _SideInput(type(si), si._view_options(), self.bag_of(si.pvalue), si._window_mapping_fn)
                for si in node.side_inputs
            ]
        self.bags[node] = op.apply(**kwargs)

    def sinks(self) -> list:
        return [bag for node, bag in self.bags.items() if node not in self.consumed and bag is not None]


class _Result(dask_runner.DaskRunnerResult):
    def wait_until_finish(self, duration=None):
        try:
            return super().wait_until_finish(duration)
        finally:
            self.client.close()


class DaskRunner(dask_runner.DaskRunner):
    """Beam's DaskRunner computing every sink, with multi-output ParDos routed by tag."""

    def run_pipeline(self, pipeline, options):
        dask_options = options.view_as(dask_runner.DaskOptions).get_all_options(drop_default=True, current_only=True)
        bag_kwargs = dask_runner.DaskOptions._extract_bag_kwargs(dask_options)
        client = ddist.Client(**dask_options)
        pipeline.replace_all(dask_overrides())
        visitor = _BagVisitor(bag_kwargs)
        pipeline.visit(visitor)
        futures = client.compute(list(dask.optimize(*visitor.sinks())))
        return _Result(client, futures)
