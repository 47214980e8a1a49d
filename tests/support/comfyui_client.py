"""Runs API-format prompts on a ComfyUI server and times its nodes; run with ComfyUI's Python.

    python comfyui_client.py http://127.0.0.1:PORT prompts.json results.json

prompts.json: {name: prompt}. results.json: {name: {"status": ..., "outputs": history outputs,
"node_seconds": {node id: seconds from its start to the next node's start or the end},
"seconds": wall time}}. It uses ComfyUI's own dependency aiohttp for the websocket that reports
which node runs.
"""

import asyncio
import json
import sys
import time
import uuid

import aiohttp


async def run_prompt(session: aiohttp.ClientSession, url: str, prompt: dict) -> dict:
    client_id = uuid.uuid4().hex
    async with session.ws_connect(f"{url}/ws?clientId={client_id}") as ws:
        start = time.perf_counter()
        async with session.post(f"{url}/prompt", json={"prompt": prompt, "client_id": client_id}) as r:
            queued = await r.json()
            if r.status != 200:
                return {"status": "rejected", "error": queued, "outputs": {}, "node_seconds": {}}
        prompt_id, started, error = queued["prompt_id"], [], None
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(message.data)
            data = event.get("data", {})
            if data.get("prompt_id") != prompt_id:
                continue
            if event["type"] == "executing":
                started.append((data["node"], time.perf_counter()))
                if data["node"] is None:
                    break
            elif event["type"] == "execution_error":
                error = {k: data.get(k) for k in ("node_id", "node_type", "exception_message")}
                break
        end = time.perf_counter()
    marks = started + [(None, end)]
    node_seconds = {node: round(marks[i + 1][1] - t, 3) for i, (node, t) in enumerate(started) if node}
    async with session.get(f"{url}/history/{prompt_id}") as r:
        history = (await r.json()).get(prompt_id, {})
    return {
        "status": "error" if error else history.get("status", {}).get("status_str", "unknown"),
        "error": error,
        "outputs": history.get("outputs", {}),
        "node_seconds": node_seconds,
        "seconds": round(end - start, 3),
    }


async def main(url: str, prompts_path: str, results_path: str) -> None:
    prompts = json.loads(open(prompts_path).read())
    results = {}
    async with aiohttp.ClientSession() as session:
        for name, prompt in prompts.items():
            results[name] = await run_prompt(session, url, prompt)
    with open(results_path, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
