"""The feedback store: every SQL statement of the project lives in this package. Each function takes a
Session; the caller owns the transaction (one submission = one `Database.session()` block).

labeling: projects, items, labelers, the labeling loop; progress: progress, read-outs, pre-assignment;
ai: AI labelers (constitutional AI); chat: chat turns and personalisation.
"""

from rlhf.feedback.store.ai import *  # noqa: F401,F403
from rlhf.feedback.store.chat import *  # noqa: F401,F403
from rlhf.feedback.store.labeling import *  # noqa: F401,F403
from rlhf.feedback.store.progress import *  # noqa: F401,F403
