"""Independent consumer: reads a driftless topic with kafka-python (not librdkafka) and
validates every event against the JSON Schema. Prints a JSON summary as its last line.

usage: consume_validate.py BROKERS TOPIC EXPECTED_COUNT SCHEMA_PATH
"""
import json
import sys

import jsonschema
from kafka import KafkaConsumer


def main() -> int:
    brokers, topic, expected, schema_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    with open(schema_path) as f:
        schema = json.load(f)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=brokers.split(","),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=20000,
    )
    valid, errors, ops = 0, [], set()
    for msg in consumer:
        event = json.loads(msg.value)
        problems = [e.message for e in validator.iter_errors(event)]
        if problems:
            errors.append({"offset": msg.offset, "problems": problems})
        else:
            valid += 1
        ops.add(event["op"])
        if msg.key is not None and event.get("key") is not None:
            assert json.loads(msg.key) == event["key"], "Kafka key equals the event key"
        if valid + len(errors) >= expected:
            break
    consumer.close()
    print(json.dumps({"valid": valid, "errors": errors, "ops": sorted(ops)}))
    return 0 if not errors and valid == expected else 1


if __name__ == "__main__":
    sys.exit(main())
