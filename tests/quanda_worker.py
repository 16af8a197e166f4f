"""A writer process for the cross-process tests: `python -m tests.quanda_worker URL ID TAG N [--until-immutable]`.

Writes N chunks "TAG:i " (or, with --until-immutable, until the message is sealed) and prints one JSON line:
the seqs it was given and, if it stopped on QuandaImmutableError, that fact."""

import asyncio
import json
import sys

from quanda.core import QuandaImmutableError, QuandaWriter, open_store


async def main(url: str, message_id: str, tag: str, count: int, until_immutable: bool) -> None:
    async with await open_store(url) as store:
        writer = await QuandaWriter.from_id(store, message_id)
        seqs, refused = [], False
        print("ready", flush=True)
        i = 0
        while until_immutable or i < count:
            try:
                seqs.append((await writer.chunk(f"{tag}:{i} ")).seq)
            except QuandaImmutableError:
                refused = True
                break
            i += 1
        print(json.dumps({"seqs": seqs, "refused": refused}), flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(args[0], args[1], args[2], int(args[3]), "--until-immutable" in args))
