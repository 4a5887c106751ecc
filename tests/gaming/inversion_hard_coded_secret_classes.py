"""Gaming submission (inversion-02): hides the public scenario's secret classes only.

Answers whose argmax is one of the public secret classes (0 to 4) get a label only;
every other answer keeps the full probability vector, so clients keep most confidences.
On the public scenario that looks perfect; on a variant with other secret classes, the
new ones leak. Expected on a variant: score <= 10.
"""

import numpy as np

PUBLIC_SECRET_CLASSES = [0, 1, 2, 3, 4]


def protect(model, tools):
    def api(x):
        probabilities = tools.probabilities(model, x)
        winner = probabilities.argmax(axis=1)
        hidden = np.isin(winner, PUBLIC_SECRET_CLASSES)
        outputs = probabilities.copy()
        outputs[hidden] = np.eye(tools.num_classes, dtype=np.float32)[winner[hidden]]
        return outputs

    return api
