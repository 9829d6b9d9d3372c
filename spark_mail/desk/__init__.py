"""The reader desk (`spark-mail serve`): the pages behind the links in every email.

links.py   routes from the configured URLs, token checks, voter ids, CSRF tokens, and
           IssueLinks (the signed poll links of the one email an ESP sends its own list)
polls.py   the issues' polls, votes (scanner detection), comments, results
guard.py   allowed hosts, rate limits, bad-token slow-down, body limit, security headers
pages.py   Jinja2 pages in the brand's colours, the strict CSP
app.py     the Starlette app: routes and handlers, the web archive as static files
server.py  uvicorn: `serve` with one or more workers

Only app.py and server.py import Starlette and uvicorn, so the rest (used by the CLI and
by rendering) stays cheap to import.
"""
