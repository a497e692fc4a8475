"""Prints driftless change events from Kafka topics, one line each (used by scripts/demo).

usage: show-events.py BROKERS TOPIC [TOPIC...]; reads every topic from the beginning until it
is caught up, then prints a per-op count.
"""
import collections
import json
import sys

from kafka import KafkaConsumer, TopicPartition


def main() -> int:
    brokers, topics = sys.argv[1], sys.argv[2:]
    consumer = KafkaConsumer(bootstrap_servers=brokers.split(","), enable_auto_commit=False,
                             group_id=None, consumer_timeout_ms=5000)
    parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    ends = consumer.end_offsets(parts)
    counts = collections.Counter()
    for msg in consumer:
        e = json.loads(msg.value)
        counts[(msg.topic, e["op"])] += 1
        row = e["after"] if e["after"] is not None else e["before"]
        print(f"{msg.topic} p{msg.partition}@{msg.offset} op={e['op']} key={msg.key.decode()} "
              f"commit_lsn={e['source']['commit_lsn']} row={json.dumps(row, ensure_ascii=False)}")
        if all(consumer.position(p) >= ends[p] for p in parts):
            break
    print("\nevents per topic and op:")
    for (topic, op), n in sorted(counts.items()):
        print(f"  {topic:40} {op}  {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
