"""`python -m gateway` is `conduct-gateway`."""

from gateway.cli import main

main(prog_name="conduct-gateway")
