"""The Python MCP SDK as an agent would use it against the gateway: the credential in a header,
in both protocol eras (the SDK's 2025-11-25 handshake, and 2026-07-28). Exits non-zero with the
reason on the first surprise.

    python_client.py MCP_URL TOKEN
"""

import asyncio
import sys

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def session(url: str, token: str, mode: str) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            names = sorted(t.name for t in (await client.list_tools()).tools)
            expected = [
                "test_audio_content",
                "test_embedded_resource",
                "test_error_handling",
                "test_image_content",
                "test_simple_text",
            ]
            assert names == expected, f"{mode}: tools {names}"
            text = await client.call_tool("test_simple_text", {})
            assert not text.is_error, f"{mode}: {text}"
            assert text.content[0].text == "This is a simple text response for testing.", text
            image = await client.call_tool("test_image_content", {})
            assert image.content[0].type == "image" and image.content[0].mime_type == "image/png", image
            failed = await client.call_tool("test_error_handling", {})
            assert failed.is_error, f"{mode}: an upstream failure is a tool error: {failed}"
            return client.protocol_version


async def main() -> None:
    url, token = sys.argv[1], sys.argv[2]
    legacy = await session(url, token, "legacy")
    modern = await session(url, token, "2026-07-28")
    auto = await session(url, token, "auto")
    # Without the credential the gateway refuses the client.
    try:
        await session(url, "pcl_wrong", "legacy")
    except BaseException:  # the SDK raises an exception group
        refused = True
    else:
        refused = False
    assert refused, "a wrong token must be refused"
    print(f"listed and called tools with protocol {legacy}, {modern} and auto ({auto}); a wrong token is refused")


asyncio.run(main())
