"""Run tags set by the triggers and read by the stages and reports."""

TAG_APP = "sevenp/app"
TAG_BRANCH = "sevenp/branch"
TAG_COMMIT = "sevenp/commit"
TAG_AUTHOR = "sevenp/author"
TAG_MESSAGE = "sevenp/message"
TAG_TRIGGER = "sevenp/trigger"
TAG_BEFORE = "sevenp/before"  # the branch head before the push (empty for a new branch)
TAG_PROMOTION = "sevenp/promotion"  # "refused" when a commit's gates were not all met
