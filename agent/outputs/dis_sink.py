"""The dis output: a lane's events as PutRecords batches (partition key = task id, data = the envelope JSON).

A batch is the lane's head rows up to the service's limits (500 records, 5 MiB). The answer settles each
record: stored ones are delivered; the ones DIS refused in a partly failed batch are retried, and only
they, in their order, with the lane waiting behind the first of them (a record DIS refuses is usually
throttled, which heals). A whole-request failure applies to every record of the batch: 5xx, timeouts and
network errors retry, other 4xx (bad credentials, no such stream) dead-letter. A record larger than the
service accepts can never be stored: it is dead-lettered alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.outputs.dis_client import MAX_RECORD_BYTES, MAX_RECORDS, MAX_REQUEST_BYTES, RECORD_OVERHEAD, DisClient
from agent.outputs.outbox import QueuedMessage
from agent.outputs.webhook import DeliveryResult, Outcome


def _encoded_size(payload: bytes) -> int:
    return (len(payload) + 2) // 3 * 4 + RECORD_OVERHEAD


class DisSender:
    def __init__(self, client: DisClient) -> None:
        self._client = client

    def close(self) -> None:
        self._client.close()

    def send(self, messages: Sequence[QueuedMessage]) -> list[DeliveryResult]:
        results: list[DeliveryResult | None] = []
        batch: list[int] = []  # positions in ``results`` of the records sent
        size = 0
        for message in messages:
            if len(message.payload) > MAX_RECORD_BYTES:
                results.append(DeliveryResult(Outcome.PERMANENT, f"the event is {len(message.payload)} bytes; "
                                              f"DIS stores records of at most {MAX_RECORD_BYTES} bytes"))
                continue
            encoded = _encoded_size(message.payload)
            if batch and (len(batch) == MAX_RECORDS or size + encoded > MAX_REQUEST_BYTES
                          or message.destination != messages[batch[0]].destination):
                break  # the rest goes in the next request (an updated task may name another stream)
            batch.append(len(results))
            results.append(None)
            size += encoded
        if batch:
            self._put([messages[position] for position in batch], batch, results)
        return [result for result in results if result is not None]

    def _put(self, sent: list[QueuedMessage], positions: list[int], results: list[DeliveryResult | None]) -> None:
        stream = str(sent[0].destination["stream_name"])
        answer = self._client.put_records(stream, [(m.task_id, m.payload) for m in sent])
        for position, index in zip(positions, range(len(sent)), strict=True):
            if answer.outcome is not Outcome.DELIVERED:
                results[position] = DeliveryResult(answer.outcome, f"stream {stream}: {answer.reason}")
            elif answer.failed[index] is not None:
                results[position] = DeliveryResult(Outcome.RETRY, f"stream {stream} refused the record: "
                                                                  f"{answer.failed[index]}")
            else:
                results[position] = DeliveryResult(Outcome.DELIVERED, f"stream {stream}")
