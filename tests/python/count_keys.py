"""Counts records and distinct keys of a topic with kafka-python (a client independent of
librdkafka). usage: count_keys.py BROKERS TOPIC; prints a JSON object."""
import json
import sys

from kafka import KafkaConsumer, TopicPartition


def main() -> int:
    brokers, topic = sys.argv[1], sys.argv[2]
    consumer = KafkaConsumer(bootstrap_servers=brokers.split(","), enable_auto_commit=False,
                             group_id=None, consumer_timeout_ms=15000)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    ends = consumer.end_offsets(parts)
    keys, records = set(), 0
    for msg in consumer:
        records += 1
        keys.add(msg.key)
        if all(consumer.position(p) >= ends[p] for p in parts):
            break
    print(json.dumps({"records": records, "keys": len(keys),
                      "end_offsets": {str(p.partition): o for p, o in ends.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
