"""The role-play playground of `ditto-jax serve --ui`: a static page, character search and blind votes.

Pure pieces (characters.py, votes.py, auth.py) plus the Starlette routes that
serve mounts next to the OpenAI API (routes.py). The page lives in static/ and
needs no build step and no network beyond this server.
"""
