"""Gaming submission (membership-01): a freshly initialised, untrained model.

It has never seen a member, so it cannot leak one. Expected: test accuracy near chance,
score <= 10.
"""


def train(x, y, tools):
    return tools.build().eval()
