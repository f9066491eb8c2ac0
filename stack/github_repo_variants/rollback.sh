#!/usr/bin/env bash
# Roll the Relay API back to its previous deployment on Railway.
#
# Usage: RAILWAY_TOKEN=... scripts/rollback [--dry-run]
# Needs RAILWAY_PROJECT_ID, RAILWAY_ENVIRONMENT_ID and RAILWAY_SERVICE_ID, plus curl and jq.
set -euo pipefail

API="${RAILWAY_API_URL:-https://backboard.railway.com/graphql/v2}"
DRY_RUN="${1:-}"

gql() {
  curl --fail --silent --show-error --max-time 30 -X POST "$API" \
    -H "Project-Access-Token: $RAILWAY_TOKEN" \
    -H 'Content-Type: application/json' \
    --data "$1"
}

LATEST='query($e: String!, $s: String!) { serviceInstance(environmentId: $e, serviceId: $s) { latestDeployment { id meta } } }'
active=$(gql "$(jq -n --arg q "$LATEST" --arg e "$RAILWAY_ENVIRONMENT_ID" \
  --arg s "$RAILWAY_SERVICE_ID" '{query: $q, variables: {e: $e, s: $s}}')")
active_id=$(jq -r '.data.serviceInstance.latestDeployment.id' <<<"$active")
active_commit=$(jq -r '.data.serviceInstance.latestDeployment.meta.commitHash' <<<"$active")

LIST='query($i: DeploymentListInput!) { deployments(input: $i, first: 20) { edges { node { id status canRollback meta } } } }'
target=$(gql "$(jq -n --arg q "$LIST" --arg p "$RAILWAY_PROJECT_ID" \
  --arg e "$RAILWAY_ENVIRONMENT_ID" --arg s "$RAILWAY_SERVICE_ID" \
  '{query: $q, variables: {i: {projectId: $p, environmentId: $e, serviceId: $s}}}')" \
  | jq -r --arg a "$active_id" --arg c "$active_commit" '[.data.deployments.edges[].node
      | select(.id != $a and .canRollback and (.status == "SUCCESS" or .status == "REMOVED")
               and .meta.commitHash != $c)][0].id // empty')
if [ -z "$target" ]; then
  echo "no previous deployment can be rolled back to" >&2
  exit 1
fi
echo "rolling back $active_id -> $target"
[ "$DRY_RUN" = "--dry-run" ] && exit 0

ROLLBACK='mutation($id: String!) { deploymentRollback(id: $id) }'
gql "$(jq -n --arg q "$ROLLBACK" --arg id "$target" '{query: $q, variables: {id: $id}}')"
echo
