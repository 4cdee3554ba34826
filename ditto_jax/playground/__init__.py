"""The role-play playground of `ditto-jax serve --ui`: a static page, character search and blind votes.

Pure pieces (characters.py, votes.py) plus the Starlette routes that serve
mounts next to the OpenAI API (routes.py); the API key that guards both is
ditto_jax/serving/auth.py. The page lives in static/ and needs no build step
and no network beyond this server.
"""
