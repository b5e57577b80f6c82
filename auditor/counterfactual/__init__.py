"""What would change the model's mind: counterfactual explanations of explained cases."""
