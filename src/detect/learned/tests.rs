//! The learned reader end to end on a small topic whose words alone decide: training,
//! reading, and the model file.

use std::collections::BTreeMap;

use super::*;
use crate::detect::examples::Example;
use crate::detect::Stance;

fn example(id: usize, title: &str, relevant: bool, stance: Option<Stance>) -> Example {
    let mut issues = BTreeMap::new();
    issues.insert(
        "mil".to_string(),
        BTreeMap::from([("mx".to_string(), stance)]),
    );
    Example {
        id: id.to_string(),
        lang: Some("en".into()),
        title: title.into(),
        summary: String::new(),
        url: None,
        story: None,
        relevant,
        issues,
        note: None,
    }
}

/// Articles whose words alone decide: "rejects" oppose, "accepts" support.
fn examples() -> Vec<Example> {
    let mut out = Vec::new();
    for i in 0..60 {
        let (title, relevant, stance) = match i % 4 {
            0 => ("mexico rejects troops", true, Some(Stance::Oppose)),
            1 => ("mexico accepts troops", true, Some(Stance::Support)),
            2 => ("mexico troops parade", true, None),
            _ => ("city park opens", false, None),
        };
        out.push(example(i, &format!("{title} {i}"), relevant, stance));
    }
    out
}

fn featurised(examples: &[Example]) -> Vec<Featurised<'_>> {
    examples
        .iter()
        .map(|e| {
            let mut f = Vec::new();
            let tokens = crate::detect::text::tokens(&e.title);
            sentence_features(0, &tokens, &[], &(Vec::new(), Vec::new()), true, &mut f);
            Featurised {
                example: e,
                sentences: vec![f],
            }
        })
        .collect()
}

fn train_small(examples: &[Example]) -> Model {
    let f = featurised(examples);
    let refs: Vec<&Featurised<'_>> = f.iter().collect();
    let options = TrainOptions {
        min_class_examples: 5,
        ..TrainOptions::default()
    };
    train("t", &["mil".into()], &["mx".into()], &refs, &options).unwrap()
}

fn read(model: &Model, title: &str) -> Reading {
    let mut f = Vec::new();
    let tokens = crate::detect::text::tokens(title);
    sentence_features(0, &tokens, &[], &(Vec::new(), Vec::new()), true, &mut f);
    model.read(&[f])
}

#[test]
fn the_same_examples_give_the_same_model_byte_for_byte() {
    let examples = examples();
    let a = train_small(&examples).to_json();
    let b = train_small(&examples).to_json();
    assert_eq!(a, b);
    let back = Model::from_json(&a).unwrap();
    assert_eq!(back.to_json(), a, "a model file reads back unchanged");
}

#[test]
fn learns_relevance_and_stances_from_words() {
    let model = train_small(&examples());
    let rejects = read(&model, "mexico rejects troops again");
    assert!(rejects.relevant, "{rejects:?}");
    assert_eq!(rejects.stances.len(), 1, "{rejects:?}");
    assert_eq!(rejects.stances[0].stance, Stance::Oppose);
    let accepts = read(&model, "mexico accepts troops again");
    assert_eq!(accepts.stances[0].stance, Stance::Support, "{accepts:?}");
    assert!(!read(&model, "city park opens again").relevant);
}

#[test]
fn a_class_with_too_few_examples_is_left_to_the_rules() {
    let model = train_small(&examples());
    let head = &model.heads[1];
    assert!(head.rules_only.contains(&Stance::Neutral), "{head:?}");
    assert!(!head.classes.iter().any(|c| c == "neutral"));
}

#[test]
fn a_damaged_model_file_is_refused() {
    let mut model = train_small(&examples());
    model.weights.pop();
    let err = Model::from_json(&model.to_json()).unwrap_err();
    assert!(matches!(err, ModelError::Shape), "{err}");
    model.format = FORMAT + 1;
    assert!(matches!(
        Model::from_json(&model.to_json()).unwrap_err(),
        ModelError::Format(_) | ModelError::Shape
    ));
}
