"""A program written for aiokpl 0.2, with only its imports changed to kpl_rs.

Usage: python aiokpl_program.py ENDPOINT STREAM COUNT
Puts COUNT records ("aiokpl <i>") and prints how many were stored.
"""

import asyncio
import sys

from kpl_rs import Config, Producer  # was: from aiokpl import Config, Producer
from kpl_rs.result import RecordResult  # was: from aiokpl.result import RecordResult


async def main(endpoint: str, stream: str, count: int) -> int:
    config = Config(
        region="us-east-1",
        endpoint_url=endpoint,
        verify_ssl=False,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    async with Producer(config) as producer:
        outcomes = []
        for i in range(count):
            outcome = await producer.put_record(
                stream=stream,
                partition_key=f"pk-{i}",
                data=f"aiokpl {i}".encode(),
            )
            outcomes.append(outcome)
        await producer.flush()
        results: list[RecordResult] = [await o.wait() for o in outcomes]
    stored = sum(1 for r in results if r.success)
    print(f"stored {stored} of {count}")
    return 0 if stored == count else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
