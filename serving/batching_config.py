"""TF-Serving's --batching_parameters_file: the BatchingParameters text proto, read as TF-Serving reads it.

The message is tensorflow_serving/servables/tensorflow/session_bundle_config.proto's
BatchingParameters (field names and numbers as there; the tensorflow-serving-api wheel does not ship
that proto, so its descriptor is built here), parsed with protobuf's own text format, so a file that
TF-Serving accepts is accepted here and a typo is one line naming it. Unset fields take TF-Serving's
defaults (bundle_factory_util.h GetQueueOptions, shared_batch_scheduler.h QueueOptions):

    max_batch_size 1000, batch_timeout_micros 0, max_enqueued_batches 10,
    num_batch_threads = CPU cores, enable_large_batch_splitting false,
    max_execution_batch_size = max_batch_size (used only when splitting), allowed_batch_sizes none."""

import os
from dataclasses import dataclass

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

_FIELDS = [  # (name, number, wrapper type or scalar type), as in session_bundle_config.proto
    ("max_batch_size", 1, "Int64Value"),
    ("batch_timeout_micros", 2, "Int64Value"),
    ("max_enqueued_batches", 3, "Int64Value"),
    ("num_batch_threads", 4, "Int64Value"),
    ("thread_pool_name", 5, "StringValue"),
    ("enable_large_batch_splitting", 8, "BoolValue"),
    ("max_execution_batch_size", 9, "Int64Value"),
]


def _message_class():
    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="coophash_keras/serving/batching_parameters.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = proto.message_type.add(name="BatchingParameters")
    for name, number, wrapper in _FIELDS:
        message.field.add(
            name=name,
            number=number,
            label=F.LABEL_OPTIONAL,
            type=F.TYPE_MESSAGE,
            type_name=f".google.protobuf.{wrapper}",
        )
    message.field.add(name="allowed_batch_sizes", number=6, label=F.LABEL_REPEATED, type=F.TYPE_INT64)
    message.field.add(name="pad_variable_length_inputs", number=7, label=F.LABEL_OPTIONAL, type=F.TYPE_BOOL)
    pool = descriptor_pool.DescriptorPool()  # our own pool: never clashes with a real TF-Serving proto
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


BatchingParametersProto = _message_class()


@dataclass(frozen=True)
class BatchingParameters:
    """The batching parameters in effect, TF-Serving's defaults filled in.

    Args:
        max_batch_size: the largest request (in rows) a queue accepts, and without splitting also
            the largest merged batch.
        batch_timeout_micros: how long the oldest request of an underfull batch may wait for others.
        max_enqueued_batches: batches (the open one included) a queue holds before it refuses
            requests with UNAVAILABLE.
        num_batch_threads: batches run at once.
        allowed_batch_sizes: if set, a batch is padded up to the next of these sizes.
        enable_large_batch_splitting: split a request across batches instead of refusing one larger
            than the open batch has room for.
        max_execution_batch_size: the largest merged batch when splitting.
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 0  # 0: CPU cores (TF-Serving's port::MaxParallelism())
    allowed_batch_sizes: tuple = ()
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0  # 0: max_batch_size
    thread_pool_name: str = "batch_threads"

    def __post_init__(self):
        if not self.num_batch_threads:
            object.__setattr__(self, "num_batch_threads", os.cpu_count() or 1)
        if not self.max_execution_batch_size or not self.enable_large_batch_splitting:
            object.__setattr__(self, "max_execution_batch_size", self.max_batch_size)
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    @property
    def batch_size_limit(self):
        """The largest batch a batch thread runs (before padding to an allowed size)."""
        return self.max_execution_batch_size

    def problem(self):
        """What TF-Serving would refuse in these parameters (its messages), or None."""
        if self.max_batch_size <= 0:
            return f"max_batch_size must be positive; was {self.max_batch_size}"
        if self.batch_timeout_micros < 0:
            return f"batch_timeout_micros must be non-negative; was {self.batch_timeout_micros}"
        if self.max_enqueued_batches <= 0:
            return f"max_enqueued_batches must be positive; was {self.max_enqueued_batches}"
        if self.num_batch_threads < 1:
            return f"num_batch_threads must be positive; was {self.num_batch_threads}"
        if self.max_execution_batch_size > self.max_batch_size:
            return (
                f"max_execution_batch_size ({self.max_execution_batch_size}) must not exceed "
                f"max_batch_size ({self.max_batch_size})"
            )
        sizes = list(self.allowed_batch_sizes)
        if sizes:
            if any(s <= 0 for s in sizes) or sizes != sorted(set(sizes)):
                return f"allowed_batch_sizes must be positive and increasing; was {sizes}"
            if sizes[-1] != self.max_batch_size:
                return (
                    "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                    f"{sizes[-1]}; expected {self.max_batch_size}"
                )
        return None

    def padded_size(self, size):
        """The batch size `size` rows are padded to (the next allowed size; itself if none are set)."""
        return next((s for s in self.allowed_batch_sizes if s >= size), size)


def parse_batching_parameters(text, where="batching parameters"):
    """BatchingParameters text proto -> BatchingParameters; ValueError naming the problem."""
    proto = BatchingParametersProto()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if proto.pad_variable_length_inputs:
        raise ValueError(
            f"{where}: pad_variable_length_inputs is not supported (every input of these exports "
            "has fixed dimensions after the batch axis)"
        )
    values = {name: getattr(proto, name).value for name, _, _ in _FIELDS if proto.HasField(name)}
    try:
        return BatchingParameters(allowed_batch_sizes=tuple(proto.allowed_batch_sizes), **values)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def read_batching_parameters(path):
    """The --batching_parameters_file at `path` -> BatchingParameters; ValueError naming the problem."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the batching parameters file {path}: {exc}") from None
    return parse_batching_parameters(text, where=path)
