"""The web explorer and chat page (`gradchain explorer`, docs/explorer.md).

views.py   what each page shows, read through ChainClient with the CLI's decoders
chat.py    the verified model the chat page talks to
server.py  the Starlette app: HTML pages (Jinja2 + htmx), their JSON twins under /api, the chat stream
"""
