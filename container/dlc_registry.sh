#!/usr/bin/env bash
# Print the ECR registry that holds the AWS Deep Learning Container images for a region:
#   container/dlc_registry.sh REGION      e.g. af-south-1 -> 626614931356.dkr.ecr.af-south-1.amazonaws.com
# Most regions share account 763104351884; opt-in regions and China have their own. Source of the table:
# aws/deep-learning-containers docs/reference/region_availability.md (HEAD e0ecedea, 2026-08-21),
# "Deep Learning Containers" table. Used by build_and_push.sh for the Dockerfile's FROM and the login.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 REGION" >&2; exit 2; }
region="$1"
case "$region" in
  us-east-1|us-east-2|us-west-1|us-west-2|ap-south-1|ap-northeast-1|ap-northeast-2|ap-southeast-1|\
  ap-southeast-2|ca-central-1|eu-central-1|eu-west-1|eu-west-2|eu-west-3|eu-north-1|sa-east-1)
                  account=763104351884 ;;
  af-south-1)     account=626614931356 ;;
  ap-east-1)      account=871362719292 ;;
  ap-east-2)      account=975050140332 ;;
  ap-south-2)     account=772153158452 ;;
  ap-southeast-3) account=907027046896 ;;
  ap-southeast-4) account=457447274322 ;;
  ap-southeast-5) account=550225433462 ;;
  ap-southeast-6) account=633930458069 ;;
  ap-southeast-7) account=590183813437 ;;
  ap-northeast-3) account=364406365360 ;;
  ca-west-1)      account=204538143572 ;;
  eu-south-1)     account=692866216735 ;;
  eu-south-2)     account=503227376785 ;;
  eu-central-2)   account=380420809688 ;;
  il-central-1)   account=780543022126 ;;
  mx-central-1)   account=637423239942 ;;
  me-south-1)     account=217643126080 ;;
  me-central-1)   account=914824155844 ;;
  cn-north-1|cn-northwest-1) account=727897471807 ;;
  *) echo "error: no AWS Deep Learning Containers registry known for region '$region' (container/dlc_registry.sh)" >&2
     exit 2 ;;
esac
suffix=amazonaws.com
[[ "$region" == cn-* ]] && suffix=amazonaws.com.cn
echo "$account.dkr.ecr.$region.$suffix"
