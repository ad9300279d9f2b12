"""Run tags set by the triggers and read by the stages and reports."""

TAG_APP = "sevenp/app"
TAG_BRANCH = "sevenp/branch"
TAG_COMMIT = "sevenp/commit"
TAG_AUTHOR = "sevenp/author"
TAG_MESSAGE = "sevenp/message"
TAG_TRIGGER = "sevenp/trigger"
TAG_BEFORE = "sevenp/before"  # the branch head before the push (empty for a new branch)
TAG_PROMOTION = "sevenp/promotion"  # "refused" when a commit's gates were not all met
TAG_DEPLOY_ENV = "sevenp/deploy-env"  # "<app>/<environment>" on deploy runs: one at a time per value
TAG_APPROVED = "sevenp/approved"  # environments a person asked for ("production"), comma-separated
TAG_ROLLBACK = "sevenp/rollback"  # the commit a rollback run moves away from
TAG_NOTIFIED = "sevenp/notified"  # the run already sent its own notification (deploys)
TAG_DEPLOY = "sevenp/deploy"  # outcome of a deploy run: live | rolled_back | failed | superseded | refused
TAG_FAILURE = "sevenp/failure"  # the run's first failure, one line: "<stage>: <what failed>" (the runs list says why)
TAG_ORIGIN = "sevenp/origin"  # what started the run's lineage: its trigger, or a re-executed run's origin
TAG_PR = "sevenp/pr"  # the pull/merge request number of a run the push sensor started for refs/pull/N/…
TAG_PR_BASE = "sevenp/pr-base"  # a pull request's base branch (when a webhook named it)
TAG_PR_HEAD = "sevenp/pr-head"  # and its head branch
TAG_REF = "sevenp/ref"  # the ref a pull-request or tag run was started for (refs/pull/7/head, refs/tags/v1.4.0)
