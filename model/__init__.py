"""datalaws.model"""
