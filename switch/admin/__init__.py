"""The admin HTTP server: health for load balancers, Prometheus metrics, and the JSON API the
call center and operations use (search, a transaction's timeline, links, the reversal queue).

It runs inside the switch process on its own port (starlette on uvicorn, on the switch's event
loop); nothing on the money path waits for it. `server.py` owns the app and its lifecycle,
`api.py` the routes, `auth.py` the bearer tokens and roles, `metrics.py` what /metrics shows.
"""
