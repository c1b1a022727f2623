# The spec's Python client example, as written; only the address and key differ
# (HELIOSDB_WS_URL and HELIOSDB_API_KEY replace the placeholders).
import asyncio
import json
import os

import websockets

URL = os.environ["HELIOSDB_WS_URL"]
YOUR_API_KEY = os.environ["HELIOSDB_API_KEY"]


async def subscribe_to_orders():
    async with websockets.connect(URL, subprotocols=["heliosdb.v1"]) as ws:
        # Authenticate
        await ws.send(
            json.dumps(
                {
                    "type": "request",
                    "id": "auth-1",
                    "action": "authenticate",
                    "data": {"token": YOUR_API_KEY},
                }
            )
        )

        auth_response = json.loads(await ws.recv())
        if auth_response.get("success"):
            # Subscribe to orders table
            await ws.send(
                json.dumps(
                    {
                        "type": "request",
                        "id": "sub-1",
                        "action": "subscribe",
                        "data": {"table": "orders", "events": ["INSERT", "UPDATE"]},
                    }
                )
            )

        # Listen for events
        async for message in ws:
            data = json.loads(message)
            if data["type"] == "event":
                print(f"Order event: {data['data']}", flush=True)


asyncio.run(subscribe_to_orders())
