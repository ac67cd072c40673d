-- wrk script for the validation rows of benches/load.sh: every request is a POST of the same
-- ~1 KB JSON create-org body (POST_BODY_FILE) with Content-Type: application/json, so the
-- enforce row pays the spec's body check (held, parsed, validated, forwarded) and the off
-- row does not. Env: POST_BODY_FILE.

local f = assert(io.open(os.getenv("POST_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
