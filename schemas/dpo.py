"""Config of the dpo stage: preference tuning of the SFT model on chosen/rejected pairs."""

from pydantic import Field

from schemas.training import GainFields, LoraFields, TrainConfig, learning_rate, training_figures


class DpoConfig(TrainConfig, LoraFields, GainFields):
    lr: float = learning_rate(5e-4)
    beta: float = Field(
        0.1,
        gt=0,
        description="DPO's β: how strongly the policy is held to the SFT model it starts from; "
        "larger stays closer.",
    )


def key_figures(s: dict) -> str:
    """The training figures, and TRL's reward accuracy on validation."""
    return training_figures(s) + f", val reward accuracy {s['val_reward_accuracy']}"
