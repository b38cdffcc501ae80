"""Drives agentry's /mcp endpoint with the official MCP Python SDK (PyPI `mcp`).

Usage: mcp_client.py URL WRITE_TOKEN READ_TOKEN
Prints one JSON object with what the server answered; tests/api/mcp.rs checks it.
"""

import asyncio
import json
import sys

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client


async def session_with(url, token, body):
    client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    async with client, streamable_http_client(url, http_client=client) as (read, write):
        async with ClientSession(read, write) as session:
            initialized = await session.initialize()
            return await body(session, initialized)


def innermost(error):
    """The first leaf of the exception groups the SDK's task groups raise."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def tool_result(result):
    return {"is_error": bool(result.is_error), "structured": result.structured_content}


async def main(url, write_token, read_token):
    report = {}

    async def as_writer(session, initialized):
        report["server_name"] = initialized.server_info.name
        report["protocol_version"] = initialized.protocol_version
        tools = await session.list_tools()
        report["tools"] = sorted(tool.name for tool in tools.tools)
        report["schemas"] = {tool.name: tool.input_schema for tool in tools.tools}
        created = await session.call_tool(
            "create_lead",
            {"name": "Ada Lovelace", "email": "ada@example.com", "notes": "met over MCP"},
        )
        report["created"] = tool_result(created)
        report["invalid"] = tool_result(
            await session.call_tool("create_lead", {"name": "No Contact"})
        )

    async def as_reader(session, _initialized):
        report["listed"] = tool_result(await session.call_tool("list_leads", {"limit": 10}))
        lead_id = report["created"]["structured"]["id"]
        report["got"] = tool_result(await session.call_tool("get_lead", {"lead_id": lead_id}))
        report["read_only_write"] = tool_result(
            await session.call_tool("create_lead", {"email": "eve@example.com"})
        )

    await session_with(url, write_token, as_writer)
    await session_with(url, read_token, as_reader)

    try:
        await session_with(url, "agt_not-a-real-token", lambda session, _: session.list_tools())
        report["bad_token"] = {"accepted": True}
    except Exception as error:
        cause = innermost(error)
        data = getattr(getattr(cause, "error", None), "data", None)
        report["bad_token"] = {"accepted": False, "error": type(cause).__name__, "data": data}

    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
